"""Tiny models of the real VLM families and text LMs, built from config in the tests (random weights, no
downloads): each keeps its family's transformers classes, config layout, processor settings, special tokens
and the chat template its hub checkpoints ship (LLaVA-1.5 in both the transformers-5 `chat_template.jinja`
and the older `chat_template.json` layout)."""

import json
from pathlib import Path

import torch
import transformers as T

from tests.tiny import tiny_tokenizer

LLAVA15_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] != 'system' %}{{ message['role'].upper() + ': '}}{% endif %}"
    "{# Render all images first #}{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}"
    "{{ '<image>\n' }}{% endfor %}{# Render all text next #}{% if message['role'] != 'assistant' %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] + ' '}}"
    "{% endfor %}{% else %}{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{% generation %}{{ content['text'] + ' '}}{% endgeneration %}{% endfor %}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)
NEXT_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'system' %}"
    "{{ '<<SYS>>\n' + message['content'][0]['text'] + '\n<</SYS>>\n\n' }}{% elif message['role'] == 'user' %}"
    "{{ '[INST] ' }}{# Render all images first #}{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}"
    "{{ '<image>\n' }}{% endfor %}{# Render all text next #}{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{{ content['text'] }}{% endfor %}{{' [/INST]' }}{% elif message['role'] == 'assistant' %}"
    "{{ ' ' + message['content'][0]['text'] + '<\\s> '}}{% else %}"
    "{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}"
)
ONEVISION_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + ' '}}{# Render all images first #}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>' }}{% endfor %}"
    "{# Render all video then #}{% for content in message['content'] | selectattr('type', 'equalto', 'video') %}"
    "{{ '<video>' }}{% endfor %}{# Render all text next #}{% if message['role'] != 'assistant' %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ '\n' + content['text'] }}"
    "{% endfor %}{% else %}{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{% generation %}{{ '\n' + content['text'] }}{% endgeneration %}{% endfor %}{% endif %}{{'<|im_end|>' + ' '}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SMOLVLM_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{message['role'] | capitalize}}"
    "{% if message['content'][0]['type'] == 'image' %}{{':'}}{% else %}{{': '}}{% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{line['text']}}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}<end_of_utterance>\n{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)
QWEN2_VL_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n{% else %}"
    "{% for content in message['content'] %}{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>{% elif 'text' in content %}{{ content['text'] }}{% endif %}"
    "{% endfor %}<|im_end|>\n{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
CHATML_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def _tokenizer(specials: list[str], template: str, eos: str | None = None):
    tok = tiny_tokenizer()
    tok.add_special_tokens({"additional_special_tokens": specials})
    if eos is not None:
        tok.eos_token = eos
    tok.chat_template = template
    return tok


def _lm(kind, vocab: int, **extra):
    dims = dict(
        vocab_size=vocab,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    return kind(**{**dims, **extra})


def _clip(**kw):
    dims = dict(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, patch_size=8
    )
    return T.CLIPVisionConfig(image_size=32, projection_dim=32, **{**dims, **kw})


def _siglip(**kw):
    dims = dict(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, patch_size=8
    )
    return T.SiglipVisionConfig(image_size=32, **{**dims, **kw})


def image_only(cls):
    """A processor class without its video processor (which needs torchvision), as pipeline/arch does."""
    from qslaw_pipe.pipeline.arch.base import image_only as strip

    return strip(cls)


def _save(model, processor, out: Path, seed: int) -> Path:
    torch.manual_seed(seed)
    with torch.no_grad():  # every weight random and distinct, so exports keep each initializer apart
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.05)
    model.eval().save_pretrained(out)
    processor.save_pretrained(out)
    return Path(out)


def llava15(out: Path, layout: str = "jinja", seed: int = 0) -> Path:
    """LLaVA-1.5: CLIP tower (layer -2, CLS dropped), Llama LM, CLIP processor (shortest edge + centre crop),
    the llava-hf template; `layout` json writes it as chat_template.json (transformers 4.x checkpoints)."""
    tok = _tokenizer(["<image>"], LLAVA15_TEMPLATE)
    cfg = T.LlavaConfig(
        vision_config=_clip(),
        text_config=_lm(T.LlamaConfig, len(tok)),
        image_token_id=tok.convert_tokens_to_ids("<image>"),
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        image_seq_length=16,
        projector_hidden_act="gelu",
    )
    images = T.CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    processor = T.LlavaProcessor(
        image_processor=images,
        tokenizer=tok,
        patch_size=8,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        image_token="<image>",
        chat_template=LLAVA15_TEMPLATE,
    )
    path = _save(T.LlavaForConditionalGeneration(cfg), processor, out, seed)
    if layout == "json":
        (path / "chat_template.jinja").unlink()
        (path / "chat_template.json").write_text(json.dumps({"chat_template": LLAVA15_TEMPLATE}))
        config = json.loads((path / "tokenizer_config.json").read_text())
        config.pop("chat_template", None)
        (path / "tokenizer_config.json").write_text(json.dumps(config))
    return path


def llava_next(out: Path, seed: int = 0) -> Path:
    """LLaVA-NeXT (v1.6, Mistral): anyres grid pinpoints, image_sizes, the [INST] template."""
    tok = _tokenizer(["<image>"], NEXT_TEMPLATE)
    pins = [[32, 64], [64, 32], [64, 64]]
    cfg = T.LlavaNextConfig(
        vision_config=_clip(),
        text_config=_lm(T.MistralConfig, len(tok), sliding_window=None),
        image_token_id=tok.convert_tokens_to_ids("<image>"),
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        image_grid_pinpoints=pins,
        image_seq_length=16,
    )
    images = T.LlavaNextImageProcessor(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}, image_grid_pinpoints=pins
    )
    processor = T.LlavaNextProcessor(
        image_processor=images,
        tokenizer=tok,
        patch_size=8,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        image_token="<image>",
        chat_template=NEXT_TEMPLATE,
    )
    return _save(T.LlavaNextForConditionalGeneration(cfg), processor, out, seed)


def llava_onevision(out: Path, seed: int = 0) -> Path:
    """LLaVA-OneVision: SigLIP tower (all patches), Qwen2 LM, anyres-max-9 pooling, ChatML-style template."""
    tok = _tokenizer(["<image>", "<video>"], ONEVISION_TEMPLATE, eos="<|im_end|>")
    pins = [[32, 32], [32, 64], [64, 32], [64, 64], [64, 96], [96, 64]]
    cfg = T.LlavaOnevisionConfig(
        vision_config=_siglip(),
        text_config=_lm(T.Qwen2Config, len(tok), tie_word_embeddings=True),
        image_token_id=tok.convert_tokens_to_ids("<image>"),
        video_token_id=tok.convert_tokens_to_ids("<video>"),
        vision_feature_layer=-1,
        vision_feature_select_strategy="full",
        image_grid_pinpoints=pins,
        vision_aspect_ratio="anyres_max_9",
    )
    images = T.LlavaOnevisionImageProcessor(size={"height": 32, "width": 32}, image_grid_pinpoints=pins)
    processor = image_only(T.LlavaOnevisionProcessor)(
        image_processor=images,
        tokenizer=tok,
        video_processor=None,
        num_image_tokens=16,
        vision_feature_select_strategy="full",
        vision_aspect_ratio="anyres_max_9",
        chat_template=ONEVISION_TEMPLATE,
    )
    return _save(T.LlavaOnevisionForConditionalGeneration(cfg), processor, out, seed)


def smolvlm(out: Path, seed: int = 0, idefics3: bool = False) -> Path:
    """SmolVLM (or, with `idefics3`, the Idefics3 classes it grew from): SigLIP-style tower on 32 px tiles
    plus a global view, pixel-shuffle connector (scale 2), Llama LM, the SmolVLM template."""
    specials = ["<image>", "<fake_token_around_image>", "<global-img>", "<end_of_utterance>", "<video>"]
    tok = _tokenizer(specials, SMOLVLM_TEMPLATE, eos="<end_of_utterance>")
    kind = "Idefics3" if idefics3 else "SmolVLM"
    vision = getattr(T, f"{kind}VisionConfig")(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=32,
        patch_size=8,
    )
    cfg = getattr(T, f"{kind}Config")(
        vision_config=vision,
        text_config=_lm(T.LlamaConfig, len(tok)).to_dict(),
        image_token_id=tok.convert_tokens_to_ids("<image>"),
        scale_factor=2,
        pad_token_id=0,
    )
    images = getattr(T, f"{kind}ImageProcessor")(
        do_image_splitting=True, size={"longest_edge": 64}, max_image_size={"longest_edge": 32}
    )
    extra = {} if idefics3 else {"video_processor": None}
    processor = image_only(getattr(T, f"{kind}Processor"))(
        image_processor=images, tokenizer=tok, image_seq_len=4, chat_template=SMOLVLM_TEMPLATE, **extra
    )
    return _save(getattr(T, f"{kind}ForConditionalGeneration")(cfg), processor, out, seed)


def qwen2_vl(out: Path, seed: int = 0, v25: bool = False) -> Path:
    """Qwen2-VL (or Qwen2.5-VL): patch-grid tower with a 2x2 merger, M-RoPE Qwen2 LM, the Qwen2-VL template."""
    specials = ["<|image_pad|>", "<|vision_start|>", "<|vision_end|>", "<|video_pad|>"]
    tok = _tokenizer(specials, QWEN2_VL_TEMPLATE, eos="<|im_end|>")
    ids = {
        "image_token_id": "<|image_pad|>",
        "video_token_id": "<|video_pad|>",
        "vision_start_token_id": "<|vision_start|>",
        "vision_end_token_id": "<|vision_end|>",
    }
    ids = {k: tok.convert_tokens_to_ids(v) for k, v in ids.items()}
    text = _lm(
        dict, len(tok), rope_scaling={"type": "mrope", "mrope_section": [2, 3, 3]}, tie_word_embeddings=True
    )
    merge = dict(patch_size=8, spatial_merge_size=2, temporal_patch_size=2, num_heads=2)
    if v25:
        vision = dict(depth=2, hidden_size=32, out_hidden_size=64, intermediate_size=64, window_size=32)
        cfg = T.Qwen2_5_VLConfig(
            text_config=text, vision_config={**vision, **merge, "fullatt_block_indexes": [1]}, **ids
        )
        model, processor_class = T.Qwen2_5_VLForConditionalGeneration(cfg), T.Qwen2_5_VLProcessor
    else:
        vision = dict(depth=2, embed_dim=32, hidden_size=64, mlp_ratio=2)
        cfg = T.Qwen2VLConfig(text_config=text, vision_config={**vision, **merge}, **ids)
        model, processor_class = T.Qwen2VLForConditionalGeneration(cfg), T.Qwen2VLProcessor
    images = T.Qwen2VLImageProcessor(
        min_pixels=32 * 32, max_pixels=64 * 64, patch_size=8, merge_size=2, temporal_patch_size=2
    )
    processor = image_only(processor_class)(
        image_processor=images, tokenizer=tok, video_processor=None, chat_template=QWEN2_VL_TEMPLATE
    )
    return _save(model, processor, out, seed)


def text_lm(out: Path, kind: str = "llama", seed: int = 0) -> Path:
    """A text-only causal LM (Llama, or Qwen2 with its q/k/v biases) and its tokenizer, ChatML template."""
    tok = _tokenizer([], CHATML_TEMPLATE, eos="<|im_end|>")
    config = _lm(
        T.Qwen2Config if kind == "qwen2" else T.LlamaConfig, len(tok), tie_word_embeddings=kind == "qwen2"
    )
    model = (T.Qwen2ForCausalLM if kind == "qwen2" else T.LlamaForCausalLM)(config)
    return _save(model, tok, out, seed)


VLMS = {
    "llava15": llava15,
    "llava15-json": lambda out: llava15(out, layout="json"),
    "llava-next": llava_next,
    "llava-onevision": llava_onevision,
    "smolvlm": smolvlm,
    "idefics3": lambda out: smolvlm(out, idefics3=True),
    "qwen2-vl": qwen2_vl,
    "qwen2.5-vl": lambda out: qwen2_vl(out, v25=True),
}
TEXT_LMS = {"llama": lambda out: text_lm(out, "llama"), "qwen2": lambda out: text_lm(out, "qwen2")}

# the model_type each builder makes (tests/test_layout.py checks every family adapter has a tiny model here)
MODELS_BY_TYPE = {
    "llava": "llava15",
    "llava_next": "llava-next",
    "llava_onevision": "llava-onevision",
    "smolvlm": "smolvlm",
    "idefics3": "idefics3",
    "qwen2_vl": "qwen2-vl",
    "qwen2_5_vl": "qwen2.5-vl",
}
