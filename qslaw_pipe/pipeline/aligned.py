"""The aligned projector that ships inside the package (LLaVA's stage 1 done once, offline, by
`qslaw-pipe align --ship`), so `prepare` builds an aligned default VLM on a fresh machine without training.

qslaw_pipe/assets/projector-default-vlm-i<size>.safetensors   the projector's tensors by parameter name
qslaw_pipe/assets/projector-default-vlm-i<size>.json          its manifest: `base` (the fingerprint of the
    base model it was trained on, so a projector for another model is refused), the align config, steps,
    final loss, data, the command that made it

A base model's fingerprint is what defines that model, never the bytes of a file that also holds a random
initialisation: the sha256 of the files it was built from (the prepare artifact's recorded inputs), every
tensor's name, dtype and shape, and the content of every tensor the projector does not replace. The same
LM and vision tower give the same fingerprint on any CPU, whatever kernels drew the fresh projector.
"""

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from qslaw_pipe.pipeline.tensors import load_tensors, save_tensors

ASSETS = Path(__file__).resolve().parents[1] / "assets"
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class BaseFingerprint:
    """sources: {name: sha256} of the files the model was built from (empty for a model made elsewhere);
    layout: sha256 of every tensor's name, dtype and shape; content: sha256 of the tensors kept."""

    sources: dict[str, str]
    layout: str
    content: str

    def differences(self, other: "BaseFingerprint") -> list[str]:
        """What differs, in words ("source files", "tensor names or shapes", "weights")."""
        words = {"sources": "source files", "layout": "tensor names or shapes", "content": "weights"}
        return [w for k, w in words.items() if getattr(self, k) != getattr(other, k)]


@dataclass(frozen=True)
class ShippedProjector:
    tensors: dict[str, torch.Tensor]
    manifest: dict

    @property
    def base(self) -> BaseFingerprint:
        return BaseFingerprint(**self.manifest["base"])


def asset_paths(image_size: int) -> tuple[Path, Path]:
    stem = ASSETS / f"projector-default-vlm-i{image_size}"
    return stem.with_suffix(".safetensors"), stem.with_suffix(".json")


def recorded_sources(model_dir: Path) -> dict[str, str]:
    """The sha256 of the files a prepare-built model came from (its manifest's inputs, the projector aside)."""
    manifest = Path(model_dir) / MANIFEST
    if not manifest.is_file():
        return {}
    inputs = json.loads(manifest.read_text()).get("inputs") or {}
    return {k: v["sha256"] for k, v in sorted(inputs.items()) if k != "projector"}


def base_fingerprint(model: nn.Module, replaced: set[str], sources: dict[str, str]) -> BaseFingerprint:
    """The fingerprint of `model`'s tensors with those named in `replaced` (the projector's parameters)
    left out of the content; `sources` as recorded_sources gives them. Layout and content are multisets
    (sorted shapes; sorted per-tensor hashes), so they do not depend on how a library version names them."""
    state = model.state_dict()
    layout = sorted(f"{t.dtype}:{list(t.shape)}" for t in state.values())
    content = sorted(_tensor_sha(t) for name, t in state.items() if name not in replaced)
    return BaseFingerprint(dict(sorted(sources.items())), _sha(layout), _sha(content))


def _tensor_sha(t: torch.Tensor) -> str:
    return hashlib.sha256(t.detach().contiguous().view(-1).view(torch.uint8).numpy().tobytes()).hexdigest()


def _sha(items: list[str]) -> str:
    return hashlib.sha256("\n".join(items).encode()).hexdigest()


def read_shipped(image_size: int) -> ShippedProjector | None:
    tensors_path, manifest_path = asset_paths(image_size)
    if not (tensors_path.is_file() and manifest_path.is_file()):
        return None
    return ShippedProjector(load_tensors(tensors_path)[0], json.loads(manifest_path.read_text()))


def write_shipped(image_size: int, tensors: dict[str, torch.Tensor], manifest: dict) -> Path:
    """Store the projector and its manifest (which holds `base`, a BaseFingerprint as a dict)."""
    tensors_path, manifest_path = asset_paths(image_size)
    ASSETS.mkdir(exist_ok=True)
    save_tensors(tensors_path, tensors, {"base": manifest["base"]})
    tmp = manifest_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    tmp.replace(manifest_path)
    return tensors_path
