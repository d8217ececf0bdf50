"""The fold artifact: the one canonical packed int4 format every exporter reads.

`R/fold/model.safetensors`, per quantized Linear `<name>`:
    <name>.qweight     uint8 [out, ceil(in / 2)]  codes, two per byte, low nibble first (kernels/pack.py);
                       for 8-bit codes uint8 [out, in] unpacked
    <name>.delta       fp32  [out, n_groups]      step per group
    <name>.zero_point  uint8 [out, n_groups]      integer zero point per group
    <name>.bias        (when the Linear has one)
every other tensor of the model under its state-dict name (vision tower, projector, embeddings, norms,
lm_head unless tied). W_q = delta * (code - zero_point) per group of `group_size` inputs along `in`.
Header: layout_version, bits, group_sizes, shapes {name: [out, in]}, packing, tied {name: source}.
The directory also holds the model's config, tokenizer and processor files, so it stands alone.
"""

from pathlib import Path

import torch

from qslaw_pipe.kernels.pack import unpack_int4
from qslaw_pipe.kernels.quant import dequantize_codes
from qslaw_pipe.pipeline.errors import QslawError
from qslaw_pipe.pipeline.tensors import load_tensors

LAYOUT_VERSION = 1
FOLDED_FILE = "model.safetensors"
QUANT_SUFFIXES = (".qweight", ".delta", ".zero_point")


def read_folded(fold_dir: Path) -> tuple[dict[str, torch.Tensor], dict]:
    path = Path(fold_dir) / FOLDED_FILE
    if not path.is_file():
        raise QslawError(f"{path} not found", "run `qslaw-pipe fold --run-dir R` first")
    tensors, header = load_tensors(path)
    if header.get("layout_version") != LAYOUT_VERSION:
        raise QslawError(
            f"{path} has layout version {header.get('layout_version')}, this qslaw-pipe reads {LAYOUT_VERSION}",
            "re-run `qslaw-pipe fold --force`",
        )
    return tensors, header


def layer_codes(tensors: dict, header: dict, name: str) -> torch.Tensor:
    """uint8 codes [out, in] of one quantized layer."""
    _, k = header["shapes"][name]
    q = tensors[f"{name}.qweight"]
    return unpack_int4(q, k) if header["packing"] == "int4" else q


def dequantized_weight(tensors: dict, header: dict, name: str) -> torch.Tensor:
    return dequantize_codes(
        layer_codes(tensors, header, name),
        tensors[f"{name}.delta"],
        tensors[f"{name}.zero_point"],
        header["group_sizes"][name],
    )


def full_state_dict(tensors: dict, header: dict) -> dict[str, torch.Tensor]:
    """Every tensor of the model in fp32, quantized Linears dequantized (the folded PyTorch model)."""
    quantized = set(header["shapes"])
    state = {
        k: v
        for k, v in tensors.items()
        if not (k.endswith(QUANT_SUFFIXES) and k.rsplit(".", 1)[0] in quantized)
    }
    for name in quantized:
        state[f"{name}.weight"] = dequantized_weight(tensors, header, name)
    for name, source in header.get("tied", {}).items():
        state[name] = state[source]
    return state


def load_folded_model(fold_dir: Path):
    """A LoadedModel (transformers) whose weights are the dequantized fold artifact."""
    from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

    from qslaw_pipe.pipeline.model import LoadedModel

    tensors, header = read_folded(fold_dir)
    config = AutoConfig.from_pretrained(fold_dir)
    model = AutoModelForImageTextToText.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(full_state_dict(tensors, header), strict=False)
    if unexpected or [m for m in missing if not m.endswith("lm_head.weight")]:
        raise QslawError(
            f"{fold_dir} does not match its config ({(unexpected or missing)[0]})",
            "re-run `qslaw-pipe fold --force`",
        )
    model.tie_weights()
    return LoadedModel(model.eval(), AutoProcessor.from_pretrained(fold_dir), Path(fold_dir))
