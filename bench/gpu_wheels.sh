#!/usr/bin/env bash
# Download, HERE (a machine with the package registry), the wheels that the lent GPU machine's
# python3 lacks for dsharp, into .whl/ at the repository root (ignored by git through
# .git/info/exclude). bench/gpu_check.sh installs them there from .whl/ without a network;
# the device call must name .whl in its carry. The GPU image already holds torch,
# transformers, accelerate, peft, safetensors, huggingface-hub, typer, rich, pluggy, pyyaml,
# pillow, numpy, matplotlib and pytest (/work/.library/device/KINDS.md); the versions below
# are the ones the project's venv runs its tests with.
#
#     bash bench/gpu_wheels.sh            # then: run(command="bash bench/gpu_check.sh", carry=[".whl"])
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
WHEELS=(
  diffusers==0.42.1
  importlib-metadata==10.2.0
  pydantic==2.14.4
  pydantic-core==2.50.5
  annotated-types==0.8.0
  typing-inspection==0.4.5
  typing-extensions==4.16.0
)
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >>.git/info/exclude
mkdir -p .whl
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --platform manylinux1_x86_64 -d .whl "${WHEELS[@]}"
du -sh .whl
