"""LLaVA-NeXT (anyres: the image resized to a grid of crops plus a base view, `image_sizes`) and
LLaVA-OneVision (SigLIP + Qwen2, anyres-max: the unpadded grid pooled down past a token budget). The
learned `image_newline` row that ends each grid line trains with the projector."""

from qslaw_pipe.pipeline.arch.base import Arch

NEXT = Arch(
    name="LLaVA-NeXT",
    model_types=("llava_next",),
    vision="model.vision_tower",
    projector=("model.multi_modal_projector", "model.image_newline"),
    image_inputs=("pixel_values", "image_sizes"),
    vision_export="anyres",
)

ONEVISION = Arch(
    name="LLaVA-OneVision",
    model_types=("llava_onevision",),
    vision="model.vision_tower",
    projector=("model.multi_modal_projector", "model.image_newline"),
    image_inputs=("pixel_values", "image_sizes", "batch_num_images"),
    vision_export="anyres-max",
)
