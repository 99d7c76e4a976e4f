#!/usr/bin/env bash
# Install a CPU build of torch into the current Python environment, without pinning anyone to a version.
#
# padprep only needs torch's CPU kernels. A plain `pip install torch` on Linux pulls a multi-GB CUDA
# build, so we try, in order:
#   1. torch already importable                    -> keep it (whatever version the user chose)
#   2. a CPU wheel pip can find locally (find-links, e.g. a pre-downloaded wheel) -> use it
#   3. PyTorch's CPU index                           -> a CPU wheel for this platform
#   4. plain PyPI                                    -> last resort
# Override everything with TORCH_SPEC, e.g. TORCH_SPEC="torch==2.5.1" make install.
set -euo pipefail
PY="${PYTHON:-python}"

if [ -n "${TORCH_SPEC:-}" ]; then
    exec "$PY" -m pip install "$TORCH_SPEC"
fi
if "$PY" -c "import torch" 2>/dev/null; then
    echo "torch $("$PY" -c 'import torch; print(torch.__version__)') already installed"
    exit 0
fi
# 2. a local CPU wheel: --no-index so nothing is downloaded if there is none.
probe=$(mktemp -d)
trap 'rm -rf "$probe"' EXIT
"$PY" -m pip download --quiet --no-index --no-deps --only-binary=:all: -d "$probe" torch 2>/dev/null || true
local_wheel=$(ls "$probe"/torch-*+cpu-*.whl 2>/dev/null | head -n 1 || true)
if [ -n "$local_wheel" ]; then
    echo "using local CPU wheel $(basename "$local_wheel")"
    "$PY" -m pip install "$local_wheel"
    exit 0
fi
# 3. PyTorch's CPU wheel index (network), then 4. PyPI.
"$PY" -m pip install torch --index-url https://download.pytorch.org/whl/cpu --extra-index-url https://pypi.org/simple \
    || "$PY" -m pip install torch
