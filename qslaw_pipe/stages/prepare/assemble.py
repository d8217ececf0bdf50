"""Assemble a LLaVA model from a causal LM and a vision backbone, with a freshly initialised projector.

The number of image tokens is `(image_size // patch_size) ** 2`: DINOv2 interpolates its position
embeddings, so a smaller input image is the cheapest way to fewer tokens (84 px -> 6 x 6 = 36 tokens).
"""

import torch
import transformers
from transformers import LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor, PreTrainedModel

from qslaw_pipe.pipeline import modules
from qslaw_pipe.pipeline.prompt import IMAGE_TOKEN

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


def image_processor(image_size: int):
    """Resize to a square `image_size`, ImageNet normalisation (DINOv2's)."""
    cls = getattr(transformers, "BitImageProcessorPil", None) or transformers.BitImageProcessor
    return cls(
        size={"height": image_size, "width": image_size},
        do_center_crop=False,
        do_convert_rgb=True,
        image_mean=IMAGENET_MEAN,
        image_std=IMAGENET_STD,
    )


def build_processor(tokenizer, image_size: int, patch_size: int) -> LlavaProcessor:
    """A LlavaProcessor whose tokenizer knows the `<image>` token."""
    if IMAGE_TOKEN not in tokenizer.get_vocab():
        tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
    return LlavaProcessor(
        image_processor=image_processor(image_size),
        tokenizer=tokenizer,
        patch_size=patch_size,
        vision_feature_select_strategy="default",
        image_token=IMAGE_TOKEN,
        num_additional_image_tokens=1,
        chat_template=tokenizer.chat_template,
    )


def assemble_llava(
    lm: PreTrainedModel, vision: PreTrainedModel, tokenizer, image_size: int, seed: int = 0
) -> tuple[LlavaForConditionalGeneration, LlavaProcessor]:
    """LLaVA = `vision` -> new 2-layer GELU projector -> `lm`; both pretrained halves copied in."""
    processor = build_processor(tokenizer, image_size, vision.config.patch_size)
    vocab = len(processor.tokenizer)
    text_config = lm.config
    text_config.vocab_size = max(text_config.vocab_size, vocab)
    config = LlavaConfig(
        vision_config=vision.config,
        text_config=text_config,
        image_token_id=processor.tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        projector_hidden_act="gelu",
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",
        image_seq_length=(image_size // vision.config.patch_size) ** 2,
        tie_word_embeddings=getattr(text_config, "tie_word_embeddings", False),
    )
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config).eval()
    lm.resize_token_embeddings(text_config.vocab_size)
    modules.vision_tower(model).load_state_dict(vision.state_dict())
    modules.decoder(model).load_state_dict(modules.decoder(lm).state_dict())
    model.get_output_embeddings().load_state_dict(lm.get_output_embeddings().state_dict())
    if config.tie_word_embeddings:
        model.tie_weights()
    model.generation_config.pad_token_id = processor.tokenizer.pad_token_id
    model.generation_config.eos_token_id = lm.generation_config.eos_token_id
    return model, processor
