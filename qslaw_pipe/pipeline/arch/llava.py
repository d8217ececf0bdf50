"""LLaVA (LlavaForConditionalGeneration): LLaVA-1.5 (CLIP, layer -2, CLS dropped), our default VLM (DINOv2),
SigLIP towers; Llama / Vicuna, Mistral or Qwen2 LMs. One square image -> a fixed number of `<image>` tokens."""

from qslaw_pipe.pipeline.arch.base import Arch

ARCH = Arch(
    name="LLaVA",
    model_types=("llava",),
    vision="model.vision_tower",
    projector=("model.multi_modal_projector",),
    image_inputs=("pixel_values",),
    vision_export="fixed",
)
