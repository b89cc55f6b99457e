#!/usr/bin/env bash
# One step of a GPU run on a borrowed machine that has PyTorch but no vLLM and no network, and takes a
# limited amount of files per call. Every call runs this same script, from a copy of this repository:
#
#   1. copies the kit chunks this call carried (.k*/cNN, made by the offline kit builder, and .k*/extra:
#      wheels the kit lacks; or .gpukit/kNN/cNN, made by benchmarks/gpu_kit.py) to /tmp/kit; on the first
#      call, prints what the machine has of the packages a kit replaces;
#   2. once every chunk the kit's MANIFEST lists is there: installs the kit (once), into KIT_SITE (default
#      /tmp/site; 'system' upgrades the machine's own packages, as the torch a newer vLLM needs requires);
#   3. once installed: copies the repository to /tmp/repo and starts JOB there (default: benchmarks/gpu.py
#      with PROFILE, BUDGET, PHASES, TP) in the background, in a session of its own so that it outlives
#      this call (once); JOB writes into $RES (/tmp/gpu-out) and the script marks $RES/DONE when it ends;
#   4. waits up to WAIT seconds (default 540) for it to finish, then packs what it wrote so far into
#      $OUT/gpu-results.tgz and prints its progress.
#
# So: one call per chunk, back to back (the machine is given back when idle), then calls that only wait,
# until the log says DONE. Environment: PROFILE (h200x1), BUDGET (seconds for gpu.py, default 1100),
# PHASES (gpu.py's default: all), TP.
set -uo pipefail
WAIT=${WAIT:-540}; PROFILE=${PROFILE:-h200x1}; BUDGET=${BUDGET:-1100}; KIT_SITE=${KIT_SITE:-/tmp/site}
RES=/tmp/gpu-out
if [ ! -d /tmp/kit ]; then
  python3 -m pip list 2>/dev/null | grep -iE "^(torch|triton|nvidia|cuda|numpy|numba|transformers|huggingface|tokenizers|safetensors) " | tr -s ' ' | tr '\n' ';'; echo
fi
mkdir -p /tmp/kit
for d in .k*/c[0-9][0-9] .k*/extra .gpukit/k*/c[0-9][0-9]; do [ -d "$d" ] && cp -r "$d" /tmp/kit/ && echo "kit: got $(basename "$d")"; done
[ -d /tmp/kit/extra ] && mkdir -p /tmp/kit/c99 && cp /tmp/kit/extra/*.whl /tmp/kit/c99/  # install.sh takes c*/*.whl

if [ ! -f /tmp/kit/.installed ] && [ -f /tmp/kit/c01/MANIFEST ]; then
  missing=$(awk '/^c[0-9][0-9] /{print $1}' /tmp/kit/c01/MANIFEST | while read -r c; do [ -d "/tmp/kit/$c" ] || echo "$c"; done)
  if [ -n "$missing" ]; then
    echo "kit: still missing $(echo $missing)"
  else
    began=$(date +%s)
    bash /tmp/kit/c01/install.sh "$KIT_SITE" && touch /tmp/kit/.installed && echo "kit: installed in $(( $(date +%s) - began )) s"
    PYTHONPATH=/tmp/site python3 -c "import torch, vllm; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'vllm', vllm.__version__)" 2>&1 | tail -3
  fi
fi

if [ -f /tmp/kit/.installed ] && [ ! -d "$RES" ]; then
  rm -rf /tmp/repo && mkdir -p /tmp/repo "$RES" && cp -r benchmarks pytest_glm suites conftest.py pyproject.toml /tmp/repo/
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$RES/gpu.txt" 2>&1
  (
    cd /tmp/repo || exit 1
    export PYTHONPATH=/tmp/site:/tmp/repo VLLM_USE_FLASHINFER_SAMPLER=0 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 \
      VLLM_NO_USAGE_STATS=1 PYTHONUNBUFFERED=1 PYTEST_GLM_CACHE=/tmp/glm-cache PYTORCH_SKIP_CUDNN_COMPATIBILITY_CHECK=1 RES
    job=${JOB:-"python3 benchmarks/gpu.py --profile $PROFILE --out $RES --budget $BUDGET ${PHASES:+--phases $PHASES} ${TP:+--tp $TP}"}
    setsid nohup bash -c "$job; echo \"exit \$?\" > $RES/DONE" > "$RES/driver.log" 2>&1 < /dev/null &
  )
  echo "started benchmarks/gpu.py at $(date +%T)"
fi

if [ -d "$RES" ]; then
  for _ in $(seq "$WAIT"); do [ -f "$RES/DONE" ] && break; sleep 1; done
  grep -hE "^(==|   [a-z0-9-]+:|starting|.* ready in|job:)" "$RES/driver.log" "$RES"/*.log 2>/dev/null | cut -c1-300
  [ -f "$RES/DONE" ] && echo "DONE: $(cat "$RES/DONE")" || echo "still running at $(date +%T)"
  tar czf "$OUT/gpu-results.tgz" -C "$(dirname "$RES")" "$(basename "$RES")" 2>/dev/null
fi
