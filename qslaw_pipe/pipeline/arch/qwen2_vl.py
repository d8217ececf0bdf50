"""Qwen2-VL and Qwen2.5-VL: the image as a grid of 14 px patches at its own resolution (`pixel_values`
[patches, C*T*P*P], `image_grid_thw`), merged 2x2 by `visual.merger` (the projector; the rest of `visual`
is the tower), `<|image_pad|>` tokens, and multimodal rotary positions (M-RoPE: temporal, height, width ids
per token, from `mm_token_type_ids`)."""

from qslaw_pipe.pipeline.arch.base import Arch

ARCH = Arch(
    name="Qwen2-VL / Qwen2.5-VL",
    model_types=("qwen2_vl", "qwen2_5_vl"),
    vision="model.visual",
    projector=("model.visual.merger",),
    image_inputs=("pixel_values", "image_grid_thw"),
    token_inputs=("mm_token_type_ids",),
    vision_export="grid",
    positions="mrope",
)
