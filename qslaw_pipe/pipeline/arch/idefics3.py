"""Idefics3 and SmolVLM: a SigLIP-style tower on 512 px tiles (the image split into a grid plus a global view,
padded tiles masked by `pixel_attention_mask`), a pixel-shuffle `connector`, the LM at `model.text_model`."""

from qslaw_pipe.pipeline.arch.base import Arch

ARCH = Arch(
    name="SmolVLM / Idefics3",
    model_types=("smolvlm", "idefics3"),
    vision="model.vision_model",
    projector=("model.connector",),
    image_inputs=("pixel_values", "pixel_attention_mask"),
    vision_export="tiles",
)
