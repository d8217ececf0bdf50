"""Run-directory artifacts: one chain of custody from the model to the last export.

`qslaw-pipe <stage> --run-dir R` writes `R/<stage>/`: safetensors tensor files plus `manifest.json`
(format version, resolved config, the identity of every input, the sha256 of every output file, measured
metrics, wall time, peak RSS, library versions). The stage holds `R/.<stage>.lock` while it works in
`R/.<stage>.partial/`, which a resumable stage may reuse after a crash; only a complete directory with
its manifest written last is renamed into place, so a finished-looking `R/<stage>/` is a finished one.

An artifact's identity is the hash of its outputs record (content, never timestamps), so `--force` with an
unchanged config leaves later stages valid. Reading an artifact verifies its files against the record and
each recorded input against its current identity, up the chain: a changed, missing, stale or foreign
file is one line naming it and the fix. A finished artifact whose own files do not match is rebuilt
(with a one-line notice) instead of being reused.
"""

import contextlib
import dataclasses
import hashlib
import json
import shutil
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from qslaw_pipe.errors import QslawError
from qslaw_pipe.paths import cache_root
from qslaw_pipe.pipeline.config import config_to_dict, identity_of, read_mapping
from qslaw_pipe.pipeline.hashing import files_of, sha256_file, sha256_path
from qslaw_pipe.pipeline.lock import stage_lock
from qslaw_pipe.pipeline.sysinfo import library_versions, peak_rss_mb

FORMAT_VERSION = 2
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

    def input_path(self, name: str) -> Path:
        """Where input `name` is now: beside the artifact when it was in the run directory, in this
        machine's cache when it was in the cache (the default model), else at its recorded path."""
        return recorded_location(self.path, self.manifest["inputs"][name])


@dataclass(frozen=True)
class StageResult:
    artifact: Artifact
    reused: bool
    resumed: bool = False


class DamagedArtifact(QslawError):
    """An artifact's own files do not match its manifest (or the manifest is unreadable)."""


def stage_dir(run_dir: Path, stage: str) -> Path:
    return Path(run_dir) / stage


def partial_dir(run_dir: Path, stage: str) -> Path:
    return Path(run_dir) / f".{stage}.partial"


def _redo(manifest: dict, path: Path) -> str:
    """How to remake an artifact: the command its manifest says wrote it (a template naming `{run_dir}`,
    where the stage takes one), or, for older manifests, in words."""
    command = manifest.get("command")
    if command:
        return f"re-run `{command.format(run_dir=path.parent)} --force`"
    return f"re-run the stage that wrote {path} with --force"


def write_json_atomic(path: Path, obj: Any) -> None:
    tmp = Path(path).with_name(Path(path).name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=_json_default))
    tmp.replace(path)


def output_hashes(directory: Path) -> dict[str, str]:
    """{relative path: sha256} of every file an artifact holds (its manifest and resume state aside)."""
    return {
        str(f.relative_to(directory)): sha256_file(f) for f in files_of(directory, (MANIFEST, PARTIAL_STATE))
    }


def _outputs_identity(outputs: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(outputs, sort_keys=True).encode()).hexdigest()


def identity(path: Path) -> str:
    """What an input is: a finished artifact by its outputs record, anything else by its content."""
    path = Path(path)
    manifest = path / MANIFEST if path.is_dir() else None
    if manifest is not None and manifest.is_file():
        outputs = _load_manifest(manifest).get("outputs")
        if outputs is not None:
            return _outputs_identity(outputs)
    return sha256_path(path)


def _seal(manifest: dict) -> dict:
    """The manifest with `manifest_sha256`: the hash of everything else in it, so an edit is detected."""
    body = {k: v for k, v in manifest.items() if k != "manifest_sha256"}
    digest = hashlib.sha256(json.dumps(body, sort_keys=True, default=_json_default).encode()).hexdigest()
    return {**body, "manifest_sha256": digest}


def _load_manifest(path: Path) -> dict:
    return read_mapping(path, json.loads, "re-run the stage that wrote it with --force", DamagedArtifact)


def hash_inputs(
    inputs: Mapping[str, Path], run_dir: Path | None = None, model_input: str | None = None
) -> tuple[dict[str, dict], dict[str, Artifact]]:
    """Identity of each input, and the inputs that are artifacts, verified (against these inputs where they
    share a name; and, with `model_input`, made from that model); a missing input is a user error naming it.
    Inputs inside `run_dir` are also recorded relative to it (`in_run`), and inputs in the cache (the default
    model) relative to the cache (`in_cache`), so a run directory copied to another place or machine is
    checked against its own earlier stages and that machine's cache."""
    out = {}
    for name, path in inputs.items():
        path = Path(path)
        if not path.exists():
            raise QslawError(
                f"input '{name}' not found at {path}", "check the path or run the stage that makes it"
            )
        out[name] = {"path": str(path.resolve()), "sha256": identity(path)}
        for key, root in (("in_run", run_dir), ("in_cache", cache_root())):
            if root is not None and path.resolve().is_relative_to(Path(root).resolve()):
                out[name][key] = str(path.resolve().relative_to(Path(root).resolve()))
                break
    known = {name: v["sha256"] for name, v in out.items()}
    model_sha = known.get(model_input) if model_input else None
    upstream = {
        name: artifact_at(path, model_sha, known=known)
        for name, path in inputs.items()
        if (Path(path) / MANIFEST).is_file() and name != model_input
    }
    return out, upstream


def recorded_location(artifact_dir: Path, recorded: dict) -> Path:
    """An input's location now (see Artifact.input_path)."""
    if "in_run" in recorded:
        return Path(artifact_dir).parent / recorded["in_run"]
    if "in_cache" in recorded:
        return cache_root() / recorded["in_cache"]
    return Path(recorded["path"])


def read_artifact(
    run_dir: Path, stage: str, *, model_sha: str | None = None, command: str | None = None
) -> Artifact:
    """Load and verify `R/<stage>/`, refusing a missing, foreign-format, other-model, damaged or stale one;
    `command`: what writes it (a template: `qslaw-pipe calibrate --run-dir {run_dir}`), named when it is missing."""
    missing = (
        f"run `{command.format(run_dir=run_dir)}` first" if command else f"run the stage that writes {stage}"
    )
    return artifact_at(stage_dir(run_dir, stage), model_sha, missing)


def artifact_at(
    path: Path,
    model_sha: str | None = None,
    fix: str = "pass a finished stage directory",
    redo: str | None = None,
    check_inputs: bool = True,
    known: Mapping[str, str] | None = None,
) -> Artifact:
    """The finished artifact directory `path` (any stage's), verified: its files against its manifest,
    each recorded input against that input's identity now (so stale inputs up the chain are refused).
    An input whose identity is in `known` under its name (the reading stage holds the same content) is
    current wherever it lies; one gone from every place it was recorded at cannot be checked and is not
    refused (the artifact's own files are verified; a stage that needs that input names it itself)."""
    path = Path(path)
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise QslawError(f"{manifest_path} not found", fix)
    manifest = _load_manifest(manifest_path)
    redo = redo or _redo(manifest, path)
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise DamagedArtifact(
            f"{manifest_path} has artifact format version {version}, this qslaw-pipe reads {FORMAT_VERSION}",
            redo,
        )
    if _seal(manifest)["manifest_sha256"] != manifest.get("manifest_sha256"):
        raise DamagedArtifact(f"{manifest_path} was edited after the stage wrote it", redo)
    if model_sha is not None and manifest.get("model_sha256") not in (None, model_sha):
        raise QslawError(
            f"{manifest_path} was made from another model (sha256 {manifest['model_sha256'][:12]}...)",
            f"use the same --model, or {redo}",
        )
    _verify_outputs(path, manifest.get("outputs") or {}, redo)
    for name, recorded in (manifest.get("inputs") or {}).items() if check_inputs else ():
        if (known or {}).get(name) == recorded["sha256"]:
            continue
        source = recorded_location(path, recorded)
        if source.exists() and identity(source) != recorded["sha256"]:
            raise QslawError(f"{path} was made from another {name} ({source} changed since)", redo)
    return Artifact(path, manifest)


def _verify_outputs(path: Path, outputs: dict[str, str], redo: str) -> None:
    found = {str(f.relative_to(path)) for f in files_of(path, (MANIFEST, PARTIAL_STATE))}
    for name in sorted(set(outputs) | found):
        problem = (
            "is missing"
            if name not in found
            else "is not in its manifest"
            if name not in outputs
            else "changed since the stage wrote it"
            if sha256_file(path / name) != outputs[name]
            else None
        )
        if problem:
            raise DamagedArtifact(f"{path / name} {problem}", redo)


def _check_reusable(existing: Artifact, identity_: dict, earlier: dict, hashes: dict, redo: str) -> bool:
    """True when the finished artifact matches; raises when it differs (the caller handles --force). Only the
    fields the config declares its identity are compared; one an older artifact lacks counts as `earlier`'s
    value for it (the value artifacts had before the field existed)."""
    missing = object()
    had = {k: existing.config.get(k, earlier.get(k, missing)) for k in identity_}
    changed = sorted(k for k, v in identity_.items() if had[k] != v)
    if changed:
        raise QslawError(
            f"{existing.path} exists with a different config ({', '.join(changed)})",
            f"{redo.replace('re-run', 'run', 1)} to replace it, or use another --run-dir than {existing.path.parent}",
        )
    old_inputs = {k: v["sha256"] for k, v in existing.manifest["inputs"].items()}
    new_inputs = {k: v["sha256"] for k, v in hashes.items()}
    changed = sorted(k for k in set(old_inputs) | set(new_inputs) if old_inputs.get(k) != new_inputs.get(k))
    if changed:
        raise QslawError(
            f"{existing.path} was made from other inputs ({', '.join(changed)} changed)",
            f"{redo.replace('re-run', 'run', 1)} to recompute it",
        )
    return True


def _prepare_partial(partial: Path, key: dict, fresh: bool = False) -> bool:
    """Keep a matching partial directory for resume; wipe a stale or unreadable one, or any one when `fresh`
    (--force: whatever an interrupted attempt left, the stage starts over). True when resuming."""
    state = partial / PARTIAL_STATE
    if state.is_file() and not fresh:
        try:
            if json.loads(state.read_text()) == key:
                return True
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            print(f"note: {state} is unreadable; starting {partial.name} afresh", file=sys.stderr)
    _remove(partial)
    partial.mkdir(parents=True)
    write_json_atomic(state, key)
    return False


def _remove(path: Path) -> None:
    """Remove a directory tree, or a link or file in its place (a link is removed, never what it points to)."""
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)


def _publish(partial: Path, final: Path) -> None:
    """Swap the finished partial directory into place; an old artifact is removed only afterwards (a stage
    directory that was a link to elsewhere becomes a directory of its own; what it pointed to is left alone)."""
    (partial / PARTIAL_STATE).unlink(missing_ok=True)
    old = final.with_name(f".{final.name}.old")
    _remove(old)
    if final.exists() or final.is_symlink():
        final.rename(old)
    partial.rename(final)
    _remove(old)


def _reusable(final: Path, identity_: dict, earlier: dict, hashes: dict, redo: str) -> Artifact | None:
    """The finished artifact to reuse, None when there is none; raises when it differs (--force replaces it)
    and DamagedArtifact when its files do not match its manifest (the caller rebuilds it)."""
    if not (final / MANIFEST).is_file():
        return None
    existing = artifact_at(final, check_inputs=False)  # changed inputs: _check_reusable says so
    return existing if _check_reusable(existing, identity_, earlier, hashes, redo) else None


def _make_run_dir(run_dir: Path) -> Path:
    try:
        str(run_dir).encode("utf-8")
    except UnicodeEncodeError as e:  # manifests and safetensors record paths as UTF-8 text
        raise QslawError(
            f"run directory {run_dir!s:.80} has a name that is not valid UTF-8", "pass --run-dir a UTF-8 path"
        ) from e
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write-probe"
        probe.touch()
        probe.unlink()
    except (FileExistsError, NotADirectoryError) as e:
        raise QslawError(
            f"run directory {run_dir} is a file or lies under one ({e.filename})",
            "pass --run-dir a directory path",
        ) from e
    except PermissionError as e:
        raise QslawError(
            f"run directory {run_dir} is not writable", "pass --run-dir a directory you can write"
        ) from e
    return run_dir


def run_stage(
    run_dir: Path,
    stage: str,
    config: Any,
    inputs: Mapping[str, Path],
    work: Callable[[Path, bool, dict[str, Artifact]], dict],
    *,
    identity: dict | None = None,
    earlier: Mapping[str, Any] | None = None,
    command: str | None = None,
    force: bool = False,
    model_input: str | None = "model",
) -> StageResult:
    """Run `work(workdir, resuming, upstream) -> metrics` under the run-directory contract; `upstream`: the
    inputs that are artifacts, verified (the stage reads them from there, never again from disk).

    `config`: the stage's settings the manifest records, a dict or a config dataclass (whose identity is then
    `identity_of(config)` and whose `EARLIER` defaults apply). Reuses a finished, intact artifact whose
    `identity` (the config fields that decide what the artifact is; default the whole `config`) and inputs
    match; refuses a different one unless
    `force`; rebuilds a damaged one; resumes a crashed attempt with the same identity and inputs in its
    partial directory. `command` (what writes the stage, a template: `qslaw-pipe calibrate --run-dir
    {run_dir}`) is recorded for the fixes messages name. One process at a time per stage and run directory.
    """
    if dataclasses.is_dataclass(config):
        identity = identity_of(config) if identity is None else identity
        earlier = getattr(type(config), "EARLIER", {}) if earlier is None else earlier
        config = config_to_dict(config)
    run_dir, identity_, earlier = Path(run_dir), config if identity is None else identity, dict(earlier or {})
    final = stage_dir(run_dir, stage)
    redo = _redo({"command": command}, final)
    if not force:  # reuse needs no write, nor the lock: a read-only run directory reuses its stages
        with contextlib.suppress(DamagedArtifact):
            hashes, _ = hash_inputs(inputs, run_dir, model_input)
            reused = _reusable(final, identity_, earlier, hashes, redo)
            if reused is not None:
                return StageResult(reused, reused=True)
    run_dir = _make_run_dir(run_dir)
    with stage_lock(run_dir, stage):
        hashes, upstream = hash_inputs(inputs, run_dir, model_input)
        if not force:
            try:
                reused = _reusable(final, identity_, earlier, hashes, redo)
            except DamagedArtifact as e:
                print(f"note: {e.problem}; rebuilding {final}", file=sys.stderr)
            else:
                if reused is not None:
                    return StageResult(reused, reused=True)
        partial = partial_dir(run_dir, stage)
        key = {"stage": stage, "config": identity_, "inputs": {k: v["sha256"] for k, v in hashes.items()}}
        resuming = _prepare_partial(partial, key, fresh=force)
        start = time.perf_counter()
        metrics = work(partial, resuming, upstream)
        manifest = {
            "format_version": FORMAT_VERSION,
            "stage": stage,
            "command": command,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "config": config,
            "inputs": hashes,
            "model_sha256": hashes[model_input]["sha256"] if model_input in hashes else None,
            "outputs": output_hashes(partial),
            "metrics": metrics,
            "wall_time_s": round(time.perf_counter() - start, 3),
            "peak_rss_mb": round(peak_rss_mb(), 1),
            "versions": library_versions(),
        }
        write_json_atomic(partial / MANIFEST, _seal(json.loads(json.dumps(manifest, default=_json_default))))
        _publish(partial, final)
        return StageResult(Artifact(final, json.loads((final / MANIFEST).read_text())), False, resuming)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item"):
        return obj.item()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
