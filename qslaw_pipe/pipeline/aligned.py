"""The aligned projector that ships inside the package (LLaVA's stage 1 done once, offline, by
`qslaw-pipe align --ship`), so `prepare` builds an aligned default VLM on a fresh machine without training.

qslaw_pipe/assets/projector-default-vlm-i<size>.safetensors   the projector's tensors by parameter name
qslaw_pipe/assets/projector-default-vlm-i<size>.json          its manifest: model_sha256 (the base model's
    weights file it was trained on, so a mismatch is refused), the align config, steps, final loss, data,
    the command that made it
"""

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from qslaw_pipe.pipeline.hashing import sha256_file
from qslaw_pipe.pipeline.tensors import load_tensors, save_tensors

ASSETS = Path(__file__).resolve().parents[1] / "assets"
WEIGHTS_FILE = "model.safetensors"


@dataclass(frozen=True)
class ShippedProjector:
    tensors: dict[str, torch.Tensor]
    manifest: dict


def asset_paths(image_size: int) -> tuple[Path, Path]:
    stem = ASSETS / f"projector-default-vlm-i{image_size}"
    return stem.with_suffix(".safetensors"), stem.with_suffix(".json")


def weights_sha(model_dir: Path) -> str:
    """The identity an aligned projector is tied to: sha256 of the model directory's weights file."""
    return sha256_file(Path(model_dir) / WEIGHTS_FILE)


def read_shipped(image_size: int) -> ShippedProjector | None:
    tensors_path, manifest_path = asset_paths(image_size)
    if not (tensors_path.is_file() and manifest_path.is_file()):
        return None
    return ShippedProjector(load_tensors(tensors_path)[0], json.loads(manifest_path.read_text()))


def write_shipped(image_size: int, tensors: dict[str, torch.Tensor], manifest: dict) -> Path:
    tensors_path, manifest_path = asset_paths(image_size)
    ASSETS.mkdir(exist_ok=True)
    save_tensors(tensors_path, tensors, {"model_sha256": manifest["model_sha256"]})
    tmp = manifest_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    tmp.replace(manifest_path)
    return tensors_path
