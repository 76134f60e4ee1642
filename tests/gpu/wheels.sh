#!/usr/bin/env bash
# Fetch, into .whl/, wheels of what tests/gpu/run.sh needs beyond torch, for a Linux x86-64 GPU machine with no
# network. tests/gpu/run.sh installs only those the machine lacks.
#   tests/gpu/wheels.sh [PYTHON_VERSION=3.12] [--all | PACKAGE==VERSION ...]
# Default: what a stock PyTorch image lacks (Hydra, and torchao for the int8/fp8 recipes: 0.18 is the release that
# imports and runs with torch 2.11; its wheel is abi3, one for every Python >= 3.10). --all: every runtime
# dependency but torch. For another torch, name the matching torchao: tests/gpu/wheels.sh 3.12 torchao==X.Y.Z
set -euo pipefail
cd "$(dirname "$0")/../.."
py=${1:-3.12}; shift || true
case "${1:-}" in
  --all) pkgs="hydra-core==1.3.2 omegaconf==2.3.0 antlr4-python3-runtime==4.9.3 torchao==0.18.0 pyyaml numpy
               pandas pyarrow filelock nvidia-ml-py cuda-bindings onnx protobuf rich markdown-it-py mdurl pygments
               matplotlib contourpy cycler fonttools kiwisolver pillow pyparsing python-dateutil six packaging
               tzdata" ;;
  "") pkgs="hydra-core==1.3.2 omegaconf==2.3.0 antlr4-python3-runtime==4.9.3 torchao==0.18.0" ;;
  *) pkgs="$*" ;;
esac
mkdir -p .whl
for p in $pkgs; do
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$py" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl "$p" 2>/dev/null || python3 -m pip wheel -q --no-deps -w .whl "$p"  # sdist only: build it here
done
ls -la .whl
