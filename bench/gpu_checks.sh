#!/usr/bin/env bash
# What this project checks and measures on a CUDA GPU, in one call of about six minutes, for a session
# that is lent a GPU machine for a few minutes (docs/benchmarks.md, "On a GPU in one call"):
#
#   bash bench/gpu_checks.sh REFERENCE OUT
#
# REFERENCE: a checkout of github.com/astra-vision/DenseMTL (bench/compare_official.py runs it beside ours);
# OUT: a folder for the logs and the JSON. Stages, each under its own time limit so that one which hangs
# leaves the next its time:
#   1. the CUDA-only tests, which every CPU run skips (8 tests: fp16 with the gradient scaler,
#      channels_last and pinned memory, the bf16/fp16 choice, the adversarial step under autocast, the
#      fused attention kernels, nn.ELU off the CPU);
#   2. bench/compare_official.py at 512x1024, batch 2: the official code and ours, fp32 and bf16, train
#      and eval steps, two rounds, with peak memory and the model FLOP utilisation.
# Needs only what the package itself imports for these (torch, torchvision, numpy, PIL, cv2, yaml, tqdm)
# and pytest, which the device image has. Exits non-zero if any stage failed; the others still run.
set -u -o pipefail
usage="usage: bash bench/gpu_checks.sh REFERENCE OUT"
reference=${1:?$usage}
out=${2:?$usage}
python=${PYTHON:-python3}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

if ! "$python" -c "import sys, torch; sys.exit(not torch.cuda.is_available())"; then
    echo "gpu_checks: $python's torch sees no CUDA GPU; run this on a machine with one" >&2
    exit 2
fi
{ nvidia-smi; "$python" -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"; } \
    > "$out/machine.txt" 2>&1
failed=0

echo "== 1. CUDA-only tests"
timeout 150 "$python" -m pytest -q -p no:cacheprovider -rs tests/test_activation.py tests/test_train.py \
    tests/test_uda.py tests/test_xtam.py -k "cuda or off_the_cpu" 2>&1 | tee "$out/gpu_tests.log" || failed=1

echo "== 2. the official code beside ours at 512x1024"
timeout 420 "$python" bench/compare_official.py --reference "$reference" --device cuda --rounds 2 \
    --out "$out/compare_official-512x1024-gpu.json" > /dev/null 2> "$out/compare_official.log" || failed=1
tail -n 16 "$out/compare_official.log"

exit "$failed"
