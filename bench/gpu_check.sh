#!/usr/bin/env bash
# The one prepared GPU check, for a session lent a GPU (the device tool's `run`), from the
# repository root, in about 8 minutes at most (each step has its own time limit):
#   1. env.log             the GPU, torch and the packages it ran with
#   2. pytest.log          pytest -m gpu over tests/test_gpu_*.py (CUDA training in each mixed
#                          precision, a LoRA over fp16 weights under bf16 autocast, sampling
#                          on CUDA against the CPU)
#   3. sharpening_step.log bench/sharpening_step.py on the GPU (tiny SD, fp32 and bf16)
#   4. unet_step.log/.json bench/unet_step.py: an SDXL-sized random-weight UNet, a training
#                          step and an inference forward in fp16 and bf16, batch 1 and 4
#   5. ddpo_precision.log/.json  bench/ddpo_precision.py: DDPO on dsharp-mini in fp32, bf16 with
#                          float32 log-prob passes (TF32 on and off) and bf16 without them
#   6. summary.json        each step's exit status and seconds, pytest's counts, the timings
# Everything goes under $OUT (the device tool sets it; 9 files). No network is needed.
#
# Before the call, HERE: bash bench/gpu_wheels.sh (the packages the GPU image lacks, as
# wheels in .whl/). Then: run(command="bash bench/gpu_check.sh", carry=[".whl"],
# timeout_s=560). The image's python3 runs it (a venv with CUDA torch is far over the carry
# limit); a .venv at the root, where one exists there, or PYTHON=... is used instead.
#
#     bash bench/gpu_check.sh --cpu-dry-run   # on a CPU machine: the same steps, shrunk
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1

DRY=0
for arg in "$@"; do
  case "$arg" in
    --cpu-dry-run) DRY=1 ;;
    *) echo "gpu_check.sh: unknown argument $arg (expected --cpu-dry-run)" >&2; exit 2 ;;
  esac
done

if [ -n "${PYTHON:-}" ]; then PY=$PYTHON
elif [ -x .venv/bin/python ]; then PY=.venv/bin/python
else PY=python3
fi
if ! "$PY" -c 'import torch' 2>/dev/null; then
  echo "gpu_check.sh: $PY cannot import torch (set PYTHON= to a python with torch)" >&2
  exit 1
fi
if [ "$DRY" = 0 ] && ! "$PY" -c 'import sys, torch; sys.exit(not torch.cuda.is_available())'; then
  echo "gpu_check.sh: no CUDA device here (torch.cuda.is_available() is False); --cpu-dry-run checks the script on a CPU" >&2
  exit 1
fi
if [ -z "${OUT:-}" ]; then
  if [ "$DRY" = 0 ]; then
    echo "gpu_check.sh: OUT is not set (the device tool sets it; else give OUT=folder)" >&2
    exit 1
  fi
  OUT=$(mktemp -d /tmp/dsharp-gpu-check.XXXXXX)
fi
mkdir -p "$OUT" || exit 1

# The packages dsharp needs that this python lacks come from .whl/ (bench/gpu_wheels.sh).
export PYTHONPATH="$PWD/src"
NEEDED="diffusers transformers accelerate peft safetensors pydantic typer rich pluggy yaml PIL numpy matplotlib pytest"
missing() { "$PY" - "$@" <<'EOF'
import importlib.util, sys
print(" ".join(n for n in sys.argv[1:] if importlib.util.find_spec(n) is None))
EOF
}
lacking=$(missing $NEEDED)
if [ -n "$lacking" ] && compgen -G ".whl/*.whl" >/dev/null; then
  SITE=/tmp/dsharp-site
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$SITE" .whl/*.whl >"$OUT/env.log" 2>&1 \
    || { echo "gpu_check.sh: installing .whl/*.whl failed (see $OUT/env.log)" >&2; exit 1; }
  export PYTHONPATH="$PWD/src:$SITE"
  lacking=$(missing $NEEDED)
fi
if [ -n "$lacking" ]; then
  echo "gpu_check.sh: $PY lacks $lacking (run bash bench/gpu_wheels.sh here and carry .whl)" >&2
  exit 1
fi

export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
if [ "$DRY" = 1 ]; then
  export OMP_NUM_THREADS=1
  DEVICE=cpu; STEP_ARGS=(--n 2 --m 2 --repeats 1)
  UNET_ARGS=(--small --repeats 1 --batches 1,2)
  T_TESTS=300; T_STEP=240; T_UNET=240; DDPO_ARGS=(--small); T_DDPO=240
else
  DEVICE=cuda; STEP_ARGS=(--repeats 3)
  UNET_ARGS=(--repeats 3 --batches 1,4)
  T_TESTS=200; T_STEP=60; T_UNET=140; DDPO_ARGS=(); T_DDPO=60
fi
: >"$OUT/steps.tsv"
step() {  # step NAME LOG LIMIT COMMAND...: run it with a time limit, log it, record its status
  local name=$1 log=$2 limit=$3 start rc
  shift 3
  start=$(date +%s)
  echo "== $name: $*" >>"$OUT/$log"
  timeout --kill-after=10 "$limit" "$@" >>"$OUT/$log" 2>&1
  rc=$?
  printf '%s\t%s\t%s\n' "$name" "$rc" "$(($(date +%s) - start))" >>"$OUT/steps.tsv"
  echo "gpu_check: $name exit $rc ($(($(date +%s) - start)) s)"
}

{
  echo "dry run: $DRY; python: $PY; PYTHONPATH: $PYTHONPATH"
  command -v nvidia-smi >/dev/null && nvidia-smi
  "$PY" - <<'EOF'
import importlib.metadata as md, torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())
if torch.cuda.is_available():
    print("device", torch.cuda.get_device_name(0), torch.cuda.get_device_capability(0))
    print("bf16 supported", torch.cuda.is_bf16_supported())
for name in ("diffusers", "transformers", "accelerate", "peft", "pydantic", "safetensors"):
    try:
        print(name, md.version(name))
    except md.PackageNotFoundError:
        print(name, "(no metadata)")
EOF
} >>"$OUT/env.log" 2>&1

step tests pytest.log "$T_TESTS" "$PY" -m pytest -q -m gpu -p no:cacheprovider -rA \
  tests/test_gpu_cuda.py tests/test_gpu_requests_on_cpu.py
step sharpening_step_fp32 sharpening_step.log "$T_STEP" \
  "$PY" bench/sharpening_step.py --device "$DEVICE" --dtype fp32 "${STEP_ARGS[@]}"
step sharpening_step_bf16 sharpening_step.log "$T_STEP" \
  "$PY" bench/sharpening_step.py --device "$DEVICE" --dtype bf16 "${STEP_ARGS[@]}"
step unet_step unet_step.log "$T_UNET" "$PY" bench/unet_step.py --device "$DEVICE" \
  --out "$OUT/unet_step.json" "${UNET_ARGS[@]}"
step ddpo_precision ddpo_precision.log "$T_DDPO" "$PY" bench/ddpo_precision.py \
  --out "$OUT/ddpo_precision.json" "${DDPO_ARGS[@]}"

"$PY" bench/gpu_summary.py "$OUT" --dry-run "$DRY"
