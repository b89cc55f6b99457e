#!/usr/bin/env bash
# A new vLLM on one GPU in one session (JOB for benchmarks/gpu-device.sh): the gate's correctness suites on
# glm-tiny beside the shape run of GLM-4.7-Flash, then the shape run of GLM-4.5-Air-FP8 once the GPU is free.
# Why this order: the reference server is tiny (a fixed 4 GiB KV cache, --beside), so the Flash shape run can
# share the GPU with it (0.8 of the memory), but it must be up first: vLLM sizes its KV cache from the free
# memory it sees while profiling. GLM-4.5-Air-FP8's weights alone are 110 GB, so it runs alone, last.
set -u
P=${PROFILE:-h200x1}
: "${RES:?RES: the results folder}"
python3 benchmarks/gpu.py --profile "$P" --out "$RES/ref" --phases correct --beside --budget 3000 > "$RES/ref.log" 2>&1 &
ref=$!
for _ in $(seq 900); do [ -f "$RES/ref/SERVERS-UP" ] && break; sleep 1; done
echo "job: reference server up at $(date +%T)"
python3 benchmarks/gpu.py --profile "$P" --out "$RES/flash" --phases shape-flash --budget 4000 > "$RES/flash.log" 2>&1
echo "job: shape-flash done at $(date +%T)"
wait "$ref"
echo "job: reference gate done at $(date +%T)"
python3 benchmarks/gpu.py --profile "$P" --out "$RES/air" --phases shape-air-fp8 --budget 4000 > "$RES/air.log" 2>&1
echo "job: shape-air-fp8 done at $(date +%T)"
