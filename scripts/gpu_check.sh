#!/bin/bash
# factmem on a CUDA GPU in one call (issue 26): unpacks .gpu_bundle (scripts/gpu_bundle.py
# prepare made it here; earlier device calls carried its parts), then runs the CUDA tests,
# the default run, the throughput benchmark and the paper-sized PopQA -> LAMA cell, and packs
# what comes back under $OUT. See scripts/gpu_check.py; --smoke runs it all on the CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
exec python3 scripts/gpu_check.py "$@"
