"""A quantized checkpoint directory read into one record, `Imported`, and matched to a model's layers."""

import json
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from qslaw_pipe.errors import QslawError
from qslaw_pipe.kernels.quant import n_groups
from qslaw_pipe.stages.calibrate.imports.formats import importer_for


@dataclass(frozen=True)
class ImportedLayer:
    """One quantized Linear: codes uint8 [out, in]; delta fp32 and zero_point uint8 [out, n_groups]."""

    codes: torch.Tensor
    delta: torch.Tensor
    zero_point: torch.Tensor
    group_size: int


@dataclass(frozen=True)
class Imported:
    """format: the importer's name; bits: code width; layers: by the checkpoint's module names."""

    format: str
    bits: int
    layers: dict[str, ImportedLayer]


def quantization_config(directory: Path) -> dict:
    """config.json's quantization_config, or an older GPTQ checkpoint's quantize_config.json."""
    config = Path(directory) / "config.json"
    if config.is_file():
        qc = json.loads(config.read_text()).get("quantization_config")
        if qc:
            return qc
    old = Path(directory) / "quantize_config.json"
    if old.is_file():
        return {"quant_method": "gptq", **json.loads(old.read_text())}
    raise QslawError(
        f"{directory} holds no quantization_config (config.json) nor quantize_config.json",
        "pass the directory of a quantized checkpoint (GPTQ, AWQ, AutoRound or compressed-tensors)",
    )


def checkpoint_tensors(directory: Path) -> dict[str, torch.Tensor]:
    """The checkpoint's quantization tensors; its plain `.weight` / `.bias` tensors (embeddings, norms, the
    vision tower: most of a large model's bytes) are never read, the model's own being used."""
    from safetensors import safe_open

    files = sorted(Path(directory).glob("*.safetensors"))
    if not files:
        raise QslawError(f"{directory} holds no .safetensors file", "pass a checkpoint saved as safetensors")
    tensors = {}
    for f in files:
        with safe_open(str(f), framework="pt") as opened:
            for key in opened.keys():
                if not key.endswith((".weight", ".bias")):
                    tensors[key] = opened.get_tensor(key)
    return tensors


def read_checkpoint(directory: Path) -> Imported:
    qconfig = quantization_config(directory)
    return importer_for(qconfig).impl().read(checkpoint_tensors(directory), qconfig)


def grouping(qconfig: dict, key: str = "group_size") -> int:
    return int(qconfig.get(key, -1) or -1)


def check_groups(name: str, in_features: int, group: int, scales_groups: int) -> int:
    """The group size in inputs (-1: one group per row), checked against the number of scale groups stored."""
    gs = in_features if group == -1 else group
    if n_groups(in_features, gs) != scales_groups:
        raise QslawError(
            f"{name}: {scales_groups} scale groups for {in_features} inputs in groups of {gs}",
            "the checkpoint's tensors do not fit its quantization_config; re-export it",
        )
    return gs


def check_no_permutation(name: str, g_idx: torch.Tensor | None, gs: int) -> None:
    """Act-order checkpoints store g_idx; only the identity order (input i in group i // gs) folds exactly."""
    if g_idx is not None and not torch.equal(g_idx.long(), torch.arange(len(g_idx)) // gs):
        raise QslawError(
            f"{name} is quantized in act order (its g_idx permutes the groups), which our layout cannot hold",
            "import a checkpoint quantized without act order (desc_act / actorder off)",
        )


def check_bits(bits: int, supported: tuple[int, ...], what: str) -> int:
    if bits not in supported:
        raise QslawError(
            f"{what} at {bits} bits is not one we import",
            f"use a checkpoint of {', '.join(map(str, supported))} bits",
        )
    return bits


def layer_key(name: str) -> str | None:
    """A decoder Linear's name from its `layers.<i>.` on: what a text checkpoint and a VLM share."""
    m = re.search(r"(?:^|\.)(layers\.\d+\..+)$", name)
    return m.group(1) if m else None


def match_layers(targets: list[str], available: list[str]) -> dict[str, str]:
    """Each targeted layer's name in the checkpoint: the same name, or the one with the same `layers.<i>.`
    tail (a text LM's checkpoint for a VLM's language model); missing or ambiguous ones are refused."""
    exact = set(available)
    by_key: dict[str, list[str]] = {}
    for name in available:
        by_key.setdefault(layer_key(name), []).append(name)
    found, missing = {}, []
    for t in targets:
        cands = [t] if t in exact else by_key.get(layer_key(t), []) if layer_key(t) else []
        if len(cands) > 1:
            raise QslawError(
                f"{t} matches {len(cands)} layers of the checkpoint ({cands[0]}, {cands[1]})",
                "import a checkpoint of this model's language model alone",
            )
        if cands:
            found[t] = cands[0]
        else:
            missing.append(t)
    if missing:
        raise QslawError(
            f"the checkpoint holds no quantized weight for {len(missing)} targeted layer(s) (first: {missing[0]})",
            "import a checkpoint of this model, or leave those layers out with --rule PATTERN=skip",
        )
    return found
