#!/usr/bin/env bash
# One step of a GPU run on a borrowed machine that has PyTorch but no vLLM and no network, and takes a
# limited amount of files per call. Every call runs this same script, from a copy of this repository:
#
#   1. copies the kit chunks this call carried (.k*/cNN, made by the offline kit builder, and .k*/extra:
#      wheels the kit lacks) to /tmp/kit;
#   2. once every chunk the kit's MANIFEST lists is there: installs the kit into /tmp/site (once);
#   3. once installed: copies the repository to /tmp/repo and starts benchmarks/gpu.py there in the
#      background, in a session of its own so that it outlives this call (once);
#   4. waits up to WAIT seconds (default 540) for it to finish, then packs what it wrote so far into
#      $OUT/gpu-results.tgz and prints its progress.
#
# So: one call per chunk, back to back (the machine is given back when idle), then calls that only wait,
# until the log says DONE. Environment: PROFILE (h200x1), BUDGET (seconds for gpu.py, default 1100),
# PHASES (gpu.py's default: all), TP.
set -uo pipefail
WAIT=${WAIT:-540}; PROFILE=${PROFILE:-h200x1}; BUDGET=${BUDGET:-1100}
RES=/tmp/gpu-out
mkdir -p /tmp/kit
for d in .k*/c[0-9][0-9] .k*/extra; do [ -d "$d" ] && cp -r "$d" /tmp/kit/; done
[ -d /tmp/kit/extra ] && mkdir -p /tmp/kit/c99 && cp /tmp/kit/extra/*.whl /tmp/kit/c99/  # install.sh takes c*/*.whl

if [ ! -f /tmp/site/.installed ] && [ -f /tmp/kit/c01/MANIFEST ]; then
  missing=$(awk '/^c[0-9][0-9] /{print $1}' /tmp/kit/c01/MANIFEST | while read -r c; do [ -d "/tmp/kit/$c" ] || echo "$c"; done)
  if [ -n "$missing" ]; then
    echo "kit: still missing $(echo $missing)"
  else
    bash /tmp/kit/c01/install.sh /tmp/site && touch /tmp/site/.installed
  fi
fi

if [ -f /tmp/site/.installed ] && [ ! -d "$RES" ]; then
  rm -rf /tmp/repo && mkdir -p /tmp/repo "$RES" && cp -r benchmarks pytest_glm suites conftest.py pyproject.toml /tmp/repo/
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$RES/gpu.txt" 2>&1
  (
    cd /tmp/repo || exit 1
    export PYTHONPATH=/tmp/site:/tmp/repo VLLM_USE_FLASHINFER_SAMPLER=0 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 \
      VLLM_NO_USAGE_STATS=1 PYTHONUNBUFFERED=1 PYTEST_GLM_CACHE=/tmp/glm-cache
    setsid nohup bash -c "python3 benchmarks/gpu.py --profile $PROFILE --out $RES --budget $BUDGET \
      ${PHASES:+--phases $PHASES} ${TP:+--tp $TP}; echo \"exit \$?\" > $RES/DONE" > "$RES/driver.log" 2>&1 < /dev/null &
  )
  echo "started benchmarks/gpu.py at $(date +%T)"
fi

if [ -d "$RES" ]; then
  for _ in $(seq "$WAIT"); do [ -f "$RES/DONE" ] && break; sleep 1; done
  grep -E "^(==|   [a-z0-9]+:|starting|.* ready in)" "$RES/driver.log" | cut -c1-300
  [ -f "$RES/DONE" ] && echo "DONE: $(cat "$RES/DONE")" || echo "still running at $(date +%T)"
  tar czf "$OUT/gpu-results.tgz" -C "$(dirname "$RES")" "$(basename "$RES")" 2>/dev/null
fi
