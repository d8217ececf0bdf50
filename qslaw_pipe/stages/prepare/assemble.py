"""Assemble a LLaVA model from a causal LM and a vision backbone, with a freshly initialised projector.

The number of image tokens is `(image_size // patch_size) ** 2`: DINOv2 interpolates its position
embeddings, so a smaller input image is the cheapest way to fewer tokens (84 px -> 6 x 6 = 36 tokens).

The fresh projector is drawn from integers (`portable_normal`), not by torch's float samplers, whose
vectorised kernels round differently per CPU instruction set: the base model is the same file on every CPU.
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


def portable_normal(shape: tuple[int, ...], std: float, generator: torch.Generator) -> torch.Tensor:
    """fp32 draws of about N(0, std^2), bit-identical on every CPU and torch kernel path: the sum of 12
    uniform 24-bit integers (Irwin-Hall), centred in float64 where every step is exact, then one rounded
    multiply by `std` and one rounding to fp32."""
    draws = torch.randint(0, 2**24, (12, *shape), generator=generator, dtype=torch.int64)
    centred = draws.sum(0).double() / 2**24 - 6.0
    return (centred * std).float()


@torch.no_grad()
def init_projector(parameters: dict[str, torch.nn.Parameter], std: float, seed: int) -> None:
    """LLaVA's projector initialisation (weights N(0, std^2), biases 0), drawn portably from `seed`."""
    generator = torch.Generator().manual_seed(seed)
    for _, p in sorted(parameters.items()):
        p.copy_(portable_normal(tuple(p.shape), std, generator) if p.dim() > 1 else torch.zeros_like(p))


@torch.no_grad()
def add_token_rows(lm: PreTrainedModel, vocab: int, rows: torch.Tensor | None, seed: int) -> None:
    """Grow the LM's embeddings (and an untied lm_head) to `vocab` rows; the new rows are `rows`
    [new, hidden] when given, else drawn portably (N(0, initializer_range^2))."""
    old = lm.get_input_embeddings().weight.shape[0]
    lm.resize_token_embeddings(vocab, mean_resizing=False)
    if vocab == old:
        return
    generator = torch.Generator().manual_seed(seed + 1)
    shape = (vocab - old, lm.config.hidden_size)
    new = rows if rows is not None else portable_normal(shape, lm.config.initializer_range, generator)
    weights = {id(e.weight): e.weight for e in (lm.get_input_embeddings(), lm.get_output_embeddings())}
    for weight in weights.values():
        weight[old:] = new


def assemble_llava(
    lm: PreTrainedModel,
    vision: PreTrainedModel,
    tokenizer,
    image_size: int,
    seed: int = 0,
    added_rows: torch.Tensor | None = None,
) -> tuple[LlavaForConditionalGeneration, LlavaProcessor]:
    """LLaVA = `vision` -> new 2-layer GELU projector -> `lm`; both pretrained halves copied in.
    `added_rows`: the embeddings of the tokens the processor adds (`<image>`), else drawn portably."""
    processor = build_processor(tokenizer, image_size, vision.config.patch_size)
    for part in (vision.config, lm.config):  # where the halves were loaded from: a temporary directory
        part._name_or_path = ""
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
    model = LlavaForConditionalGeneration(config).eval()
    init_projector(modules.projector_parameters(model), text_config.initializer_range, seed)
    add_token_rows(lm, text_config.vocab_size, added_rows, seed)
    modules.vision_tower(model).load_state_dict(vision.state_dict())
    modules.decoder(model).load_state_dict(modules.decoder(lm).state_dict())
    model.get_output_embeddings().load_state_dict(lm.get_output_embeddings().state_dict())
    if config.tie_word_embeddings:
        model.tie_weights()
    model.generation_config.pad_token_id = processor.tokenizer.pad_token_id
    model.generation_config.eos_token_id = lm.generation_config.eos_token_id
    return model, processor
