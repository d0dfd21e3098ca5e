#!/usr/bin/env bash
# The prepared checks for a lent GPU, one part a call (each well inside the device tool's 10 minutes):
#
#   gwas   the kernel's tests on the GPU (float64 references, no default-precision dot, device
#          counts), the same job on the GPU and on XLA:CPU (benchmarks/gwas_backends.py: within 1e-4
#          dBETA/SE?), the N = 35,000 x M = 1,000,000 job at P = 128 and 512, and its feed alone
#          (benchmarks/gwas_device.py) -- issue 19's GPU lines;
#   train  the paper-size training step in float32 and bf16 at batch 4 and 8, with PyTorch (eager,
#          float32 and bf16 autocast) beside it: volumes/s, peak memory, MFU against the bf16 matmul
#          rate measured in the same process (benchmarks/train_dtype.py --torch cuda) -- issue 22's.
#
# Before the call, here: the project's packages the device image lacks, as wheels in ./wheels (ignored):
#   python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#     -d wheels nibabel ml_collections pgenlib zstandard deflate tensorboardX pytz tzdata
# Then the device tool's run: command "bash benchmarks/device_check.sh gwas", carry ["wheels"],
# timeout_s 540. The image's own jax (CUDA) is used: never `pip install -e .` there, which would replace it.
# Results land in benchmarks/results/*_gpu.{md,json} (the machine named inside) and are copied to $OUT.
# A dry run on a CPU-only machine, small: N=2000 M=20000 TEST_PLATFORM=cpu NO_WHEELS=1 bash $0 gwas
#   SHAPE=24,28,24 CHANNELS=4,8 TORCH= NO_WHEELS=1 bash $0 train   (TORCH empty: no PyTorch rows)
set -uo pipefail
part=${1:-gwas}
OUT=${OUT:-/tmp/device_check_out}
N=${N:-35000}
M=${M:-1000000}
TEST_PLATFORM=${TEST_PLATFORM:-cuda}
SHAPE=${SHAPE:-182,218,182}
CHANNELS=${CHANNELS:-16,32,64,128,256}
TORCH=${TORCH-cuda}
mkdir -p "$OUT"
if [ -z "${NO_WHEELS:-}" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/extra \
    wheels/*.whl || { echo "no wheels: see the top of $0"; exit 2; }
fi
export PYTHONPATH=/tmp/extra:. PYTHONUNBUFFERED=1
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  python3 -c "import jax; print('jax', jax.__version__, jax.devices())"
  nproc
} 2>&1 | tee "$OUT/device.txt"
step() {  # a named step with its time, its output appended to $OUT/log
  echo "== $1" | tee -a "$OUT/log"
  local began=$SECONDS
  shift
  "$@" 2>&1 | tee -a "$OUT/log"
  echo "== took $((SECONDS - began)) s, exit ${PIPESTATUS[0]}" | tee -a "$OUT/log"
  cp benchmarks/results/*_gpu.* "$OUT"/ 2>/dev/null  # after each step: a call cut off keeps what ran
}
case $part in
  gwas)
    # tests/conftest.py defaults JAX_PLATFORMS to cpu: ask for the GPU (the 4-device test needs 4)
    step "kernel tests on the GPU" env JAX_PLATFORMS=$TEST_PLATFORM timeout 240 python3 -m pytest -q -x -p no:cacheprovider \
      tests/test_gwas_kernel.py tests/test_device_counts.py tests/test_ldscore.py tests/test_rhe.py \
      -k "(test_gwas_kernel and not four_devices) or test_device_counts or full_precision"
    step "GPU against XLA:CPU" timeout 240 python3 benchmarks/gwas_backends.py --n $N --m 20000 --p 16 \
      --name gwas_backends_gpu
    step "35k x 1M, P = 128 and 512" timeout 300 python3 benchmarks/gwas_device.py --n $N --m $M \
      --p 128,512 --name gwas_device_gpu
    step "35k x 1M feed only" timeout 120 python3 benchmarks/gwas_device.py --n $N --m $M --p 128 \
      --feed-only --name gwas_device_feed_gpu
    ;;
  train)
    step "training step, float32 and bf16, batch 4 and 8, with PyTorch" timeout 520 python3 benchmarks/train_dtype.py \
      --shape $SHAPE --channels $CHANNELS --batches 4,8 --steps 5 ${TORCH:+--torch $TORCH} --name train_dtype_gpu
    ;;
  *)
    echo "part: gwas or train, not $part"
    exit 2
    ;;
esac
ls -l "$OUT"
