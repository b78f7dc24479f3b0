#!/usr/bin/env bash
# ResNet-50 and a MiniLM-L6-sized encoder served through servion on a GPU, against the raw
# models in the same run (served/raw, GPU utilisation, p99). For a machine with a GPU;
# never run by CI. Arguments go to scripts/gpu_check.py (--help lists them).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null \
  || { echo "gpu_check: no CUDA device visible to torch (pass --device cpu --tiny for a smoke run)" >&2
       [ "${1:-}" = "--device" ] || exit 2; }
exec python3 scripts/gpu_check.py "$@"
