#!/usr/bin/env bash
# Train the three reference models side by side on one CUDA GPU and collect the weights.
#   scripts/train_gpu.sh OUTDIR [WAIT_S]
# Runs from the repository root on a machine with torch, transformers and tokenizers; wheels of anything
# else pytest_glm needs to load the cases (jsonschema and its dependencies) may be put in .whl/.
# The trainings run in a session of their own, so a second call with the same OUTDIR collects what an
# earlier call left running. Copy OUTDIR/*.safetensors and *.json to pytest_glm/reference/weights/.
set -uo pipefail
out=${1:?usage: scripts/train_gpu.sh OUTDIR [WAIT_S]}
wait_s=${2:-540}
work=/tmp/pytest-glm-train
mkdir -p "$out" "$work"
if [ -d .whl ] && ! python3 -c "import jsonschema" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl || exit 1
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}:/tmp/site" PYTHONUNBUFFERED=1
if [ ! -e "$work/started" ]; then
  touch "$work/started"
  train() {  # name, then train.py's arguments
    local name=$1; shift
    setsid bash -c "python3 -m pytest_glm.reference.train --device cuda --out $work $* > $work/$name.log 2>&1; echo \$? > $work/$name.rc" &
  }
  train glm-tiny --family glm45 --steps "${STEPS_MAIN:-1600}"
  train glm-tiny-47 --family glm47 --steps "${STEPS_MAIN:-1600}"
  train glm-tiny-variant --family glm45 --name glm-tiny-variant --steps "${STEPS_VARIANT:-2000}" \
    --answers pytest_glm/reference/answers/glm-tiny-variant.json
fi
for _ in $(seq "$wait_s"); do
  [ -e "$work/glm-tiny.rc" ] && [ -e "$work/glm-tiny-47.rc" ] && [ -e "$work/glm-tiny-variant.rc" ] && break
  sleep 1
done
for name in glm-tiny glm-tiny-47 glm-tiny-variant; do
  tail -n 3 "$work/$name.log" 2>/dev/null
  cp "$work/$name".{log,safetensors,json,rc} "$out/" 2>/dev/null
done
nvidia-smi --query-gpu=name,memory.used --format=csv,noheader 2>/dev/null
