"""Model families: one adapter per family, the only place that knows a family's layout (base.Arch).

    base.py         Arch (parts by attribute path, forward inputs, ONNX vision kind), processor loading
                    without torchvision, image-input collation
    llava.py        LLaVA: LLaVA-1.5, our default VLM, SigLIP / CLIP / DINOv2 towers
    llava_next.py   LLaVA-NeXT (anyres) and LLaVA-OneVision (anyres-max)
    idefics3.py     SmolVLM and Idefics3 (tiles, pixel-shuffle connector)
    qwen2_vl.py     Qwen2-VL and Qwen2.5-VL (patch grid, M-RoPE)
    causal_lm.py    text-only causal LMs

The decoder, its layers, the embeddings and lm_head are found alike in every family (transformers'
get_decoder, get_input_embeddings, get_output_embeddings). A new family is one file here and one row below.
"""

from qslaw_pipe.errors import QslawError
from qslaw_pipe.pipeline.arch import causal_lm, idefics3, llava, llava_next, qwen2_vl
from qslaw_pipe.pipeline.arch.base import Arch

FAMILIES: tuple[Arch, ...] = (llava.ARCH, llava_next.NEXT, llava_next.ONEVISION, idefics3.ARCH, qwen2_vl.ARCH)
TEXT = causal_lm.ARCH
BY_TYPE = {t: a for a in FAMILIES for t in a.model_types}
__all__ = ["Arch", "FAMILIES", "TEXT", "arch_of"]


def arch_of(config) -> Arch:
    """The adapter of a model's config (a transformers config or config.json as a dict): its family's, or
    the text-only one for a config without a vision part; another multimodal family is one line naming it."""
    get = config.get if isinstance(config, dict) else lambda k, d=None: getattr(config, k, d)
    model_type = get("model_type")
    if model_type in BY_TYPE:
        return BY_TYPE[model_type]
    if get("vision_config") is None:
        return TEXT
    known = ", ".join(t for a in FAMILIES for t in a.model_types)
    raise QslawError(
        f"model type {model_type} is a multimodal family qslaw-pipe has no adapter for (it has: {known})",
        "use a model of a supported family, or add an adapter (qslaw_pipe/pipeline/arch/)",
    )
