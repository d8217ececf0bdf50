"""Run-directory artifacts.

`qslaw-pipe <stage> --run-dir R` writes `R/<stage>/`: safetensors tensor files plus `manifest.json`
(format version, resolved config, sha256 of every input, measured metrics, wall time, peak RSS,
library versions). The stage works in `R/.<stage>.partial/`, which a resumable stage may reuse after
a crash; only a complete directory with its manifest written last is renamed into place, so a
finished-looking `R/<stage>/` is always a finished one.
"""

import json
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from qslaw_pipe.errors import QslawError
from qslaw_pipe.pipeline.hashing import sha256_path
from qslaw_pipe.pipeline.sysinfo import library_versions, peak_rss_mb

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
PARTIAL_STATE = "partial.json"


@dataclass(frozen=True)
class Artifact:
    """A finished stage directory and its parsed manifest."""

    path: Path
    manifest: dict

    @property
    def metrics(self) -> dict:
        return self.manifest["metrics"]

    @property
    def config(self) -> dict:
        return self.manifest["config"]

    def input_sha(self, name: str) -> str:
        return self.manifest["inputs"][name]["sha256"]


@dataclass(frozen=True)
class StageResult:
    artifact: Artifact
    reused: bool
    resumed: bool = False


def stage_dir(run_dir: Path, stage: str) -> Path:
    return Path(run_dir) / stage


def partial_dir(run_dir: Path, stage: str) -> Path:
    return Path(run_dir) / f".{stage}.partial"


def hash_inputs(inputs: Mapping[str, Path]) -> dict[str, dict]:
    """sha256 of each input path; a missing input is a user error naming it."""
    out = {}
    for name, path in inputs.items():
        path = Path(path)
        if not path.exists():
            raise QslawError(
                f"input '{name}' not found at {path}", "check the path or run the stage that makes it"
            )
        out[name] = {"path": str(path.resolve()), "sha256": sha256_path(path)}
    return out


def read_artifact(run_dir: Path, stage: str, *, model_sha: str | None = None) -> Artifact:
    """Load `R/<stage>/manifest.json`, refusing a missing, foreign-format or other-model artifact."""
    command = f"qslaw-pipe {stage} --run-dir {run_dir}"
    return artifact_at(
        stage_dir(run_dir, stage), model_sha, f"run `{command}` first", f"re-run `{command} --force`"
    )


def artifact_at(
    path: Path,
    model_sha: str | None = None,
    fix: str = "pass a finished stage directory",
    redo: str = "re-run the stage that wrote it with --force",
) -> Artifact:
    """The finished artifact directory `path` (any stage's), with the same refusals as read_artifact."""
    path = Path(path)
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise QslawError(f"{manifest_path} not found", fix)
    manifest = json.loads(manifest_path.read_text())
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise QslawError(
            f"{manifest_path} has artifact format version {version}, this qslaw-pipe reads {FORMAT_VERSION}",
            redo,
        )
    if model_sha is not None and manifest.get("model_sha256") not in (None, model_sha):
        raise QslawError(
            f"{manifest_path} was made from another model (sha256 {manifest['model_sha256'][:12]}...)",
            f"use the same --model, or {redo}",
        )
    return Artifact(path, manifest)


# where a stage computed is recorded, but it does not make an artifact another one: a run calibrated on
# a GPU is reused (and resumed) on a CPU
PLACEMENT_KEYS = ("device",)


def _identity(config: dict) -> dict:
    return {k: v for k, v in config.items() if k not in PLACEMENT_KEYS}


def _differences(old: dict, new: dict) -> list[str]:
    keys = sorted(set(old) | set(new))
    return [k for k in keys if old.get(k) != new.get(k)]


def _check_reusable(existing: Artifact, config: dict, hashes: dict, run_dir: Path, stage: str) -> bool:
    """True when the finished artifact matches; raises when it differs (the caller handles --force)."""
    changed = _differences(_identity(existing.config), _identity(config))
    if changed:
        raise QslawError(
            f"{existing.path} exists with a different config ({', '.join(changed)})",
            f"pass --force to replace it, or use another --run-dir than {run_dir}",
        )
    old_inputs = {k: v["sha256"] for k, v in existing.manifest["inputs"].items()}
    changed = _differences(old_inputs, {k: v["sha256"] for k, v in hashes.items()})
    if changed:
        raise QslawError(
            f"{existing.path} was made from other inputs ({', '.join(changed)} changed)",
            f"pass --force to recompute `{stage}`",
        )
    return True


def _prepare_partial(partial: Path, key: dict) -> bool:
    """Keep a matching partial directory for resume; wipe a stale one. Returns True when resuming."""
    state = partial / PARTIAL_STATE
    if state.is_file() and json.loads(state.read_text()) == key:
        return True
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    state.write_text(json.dumps(key, indent=1, sort_keys=True))
    return False


def _publish(partial: Path, final: Path) -> None:
    """Swap the finished partial directory into place; an old artifact is removed only afterwards."""
    (partial / PARTIAL_STATE).unlink(missing_ok=True)
    old = final.with_name(f".{final.name}.old")
    if old.exists():
        shutil.rmtree(old)
    if final.exists():
        final.rename(old)
    partial.rename(final)
    if old.exists():
        shutil.rmtree(old)


def run_stage(
    run_dir: Path,
    stage: str,
    config: dict,
    inputs: Mapping[str, Path],
    work: Callable[[Path, bool], dict],
    *,
    force: bool = False,
    model_input: str | None = "model",
) -> StageResult:
    """Run `work(workdir, resuming) -> metrics` under the run-directory contract.

    Reuses a finished artifact with the same config and inputs, refuses a different one unless
    `force`, and resumes a crashed attempt with the same config and inputs in its partial directory.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    hashes = hash_inputs(inputs)
    final = stage_dir(run_dir, stage)
    if (final / MANIFEST).is_file() and not force:
        existing = read_artifact(run_dir, stage)
        if _check_reusable(existing, config, hashes, run_dir, stage):
            return StageResult(existing, reused=True)
    partial = partial_dir(run_dir, stage)
    key = {"stage": stage, "config": _identity(config), "inputs": {k: v["sha256"] for k, v in hashes.items()}}
    resuming = _prepare_partial(partial, key)
    start = time.perf_counter()
    metrics = work(partial, resuming)
    manifest = {
        "format_version": FORMAT_VERSION,
        "stage": stage,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "config": config,
        "inputs": hashes,
        "model_sha256": hashes[model_input]["sha256"] if model_input in hashes else None,
        "files": sorted(p.name for p in partial.iterdir() if p.name != PARTIAL_STATE),
        "metrics": metrics,
        "wall_time_s": round(time.perf_counter() - start, 3),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "versions": library_versions(),
    }
    (partial / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True, default=_json_default))
    _publish(partial, final)
    return StageResult(Artifact(final, json.loads((final / MANIFEST).read_text())), False, resuming)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item"):
        return obj.item()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
