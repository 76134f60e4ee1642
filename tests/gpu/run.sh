#!/usr/bin/env bash
# Every GPU test and GPU benchmark in one command, on a machine with an NVIDIA GPU and a CUDA build of torch.
#
#   OUT=/some/dir tests/gpu/run.sh [tests] [fidelity] [lowp] [sweep] [report]   (no argument: tests fidelity lowp;
#                                                                                 all: every part)
#
#   tests     the gpu-marked tests ($GPU_TESTS, default tests/gpu: harness, torch backend and its AOTInductor package,
#             int8/fp8 recipes, compile modes, ONNX Runtime's CUDA provider, which skips unless onnxruntime-gpu can
#             start it): gpu_tests.log
#   fidelity  the pipeline's median against an independent CUDA-event replay of the same callable: gpu_fidelity.json
#             (fp16/bf16 torch.compile, within 3 %) and gpu_fidelity_lowp.json (int8/fp8 recipes, max-autotune, 1 %)
#   lowp      benchmarks/torch_lowp.py $LOWP_ARGS (default --quick: about 8 minutes): torch_lowp.json / .md and the
#             sweeps' HTML reports under torch_lowp_sweeps/
#   sweep, report   the fp32/tf32/fp16/bf16 sweep (torch_precision.json) and a small sweep's report pictures
#   multi     benchmarks/multi_gpu.py $MULTI_ARGS: a sweep on every visible GPU against one GPU: multi_gpu.json / .md
#   claims    benchmarks/h200_claims.py --only $CLAIMS (default vit_b16): the README's GPU figures, points interleaved
#             in one process, 3 rounds each; every job's raw tables packed into $out/h200_claims.tar.gz (unpack into
#             docs/benchmarks/h200/, then `python benchmarks/h200_claims.py --evaluate` writes the verdicts)
# Each part fits a 10-minute command on an H200; run them one per command where that is the limit.
#
# The machine needs nothing of ours but torch: what else is missing (Hydra, torchao) is installed from wheels in
# .whl/ (fetch them on a machine with a network: tests/gpu/wheels.sh 3.12). Results go to $OUT if set, else
# docs/benchmarks/.
set -uo pipefail
cd "$(dirname "$0")/../.."
out=${OUT:-docs/benchmarks}
mkdir -p "$out"
parts=${*:-tests fidelity lowp}
[ "$parts" = all ] && parts="tests fidelity lowp sweep report"
# Install from .whl/ only what this Python lacks (shadowing an installed numpy or pandas could break torch),
# and Hydra's trio whatever is installed: omegaconf 2.3 works with antlr4 4.9 only.
missing=$(python3 - <<'PY'
import glob, importlib.metadata as md, os
EXACT = {"hydra_core", "omegaconf", "antlr4_python3_runtime"}
for wheel in sorted(glob.glob(".whl/*.whl")):
    dist, version = os.path.basename(wheel).split("-")[:2]
    try:
        if dist in EXACT and md.version(dist) != version:
            print(wheel)
    except md.PackageNotFoundError:
        print(wheel)
PY
)
if [ -n "$missing" ]; then
  echo "installing from .whl/: $missing"
  # --upgrade: a --target that already holds a package (an earlier call on a warm machine) would skip it silently
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/pipeline-site \
    $missing 2>&1 | tee "$out/install.log"
  [ "${PIPESTATUS[0]}" = 0 ] || exit 1
  export PYTHONPATH=/tmp/pipeline-site${PYTHONPATH:+:$PYTHONPATH}  # after what the caller put first
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,power.limit --format=csv | tee "$out/gpu_env.txt"
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'capability',
torch.cuda.get_device_capability())" | tee -a "$out/gpu_env.txt"
# the whole traceback when torchao does not import: the recipes' rows would only say `unsupported`
python3 -c "import torchao.quantization, torchao; print('torchao', torchao.__version__, torchao.__file__)" 2>&1 \
  | grep -v "^W[0-9]" | tee -a "$out/gpu_env.txt"
rc=0
for part in $parts; do
  case $part in
    tests) python3 -m pytest -q -m gpu ${GPU_TESTS:-tests/gpu} -p no:cacheprovider 2>&1 | tee "$out/gpu_tests.log"
      rc=$((rc | PIPESTATUS[0])) ;;
    fidelity)
      python3 benchmarks/gpu_fidelity.py --out "$out/gpu_fidelity.json" || rc=1
      python3 benchmarks/gpu_fidelity.py --new-modes --tolerance 1 --out "$out/gpu_fidelity_lowp.json" || rc=1 ;;
    lowp)  # stops itself at its budget and keeps what it measured; the timeout is a backstop
      timeout -s TERM -k 20 580 python3 benchmarks/torch_lowp.py ${LOWP_ARGS:---quick} --out "$out/torch_lowp.json" \
        || rc=1 ;;
    sweep) python3 benchmarks/torch_precision.py --out "$out/torch_precision.json" || rc=1 ;;
    report)  # a small GPU sweep's HTML report: its pictures (clock and temperature included) come back to look at
      python3 -m pipeline -m backend=torch model=resnet50 precision=fp32,fp16 batch_size=32 \
        benchmark.duration_s=2 hydra.sweep.dir=outputs/gpu-report-sweep || rc=1
      for png in outputs/gpu-report-sweep/report/*.png; do cp "$png" "$out/report-$(basename "$png")"; done ;;
    multi)  # one sweep over every visible GPU against the same sweep on one (hydra/launcher=gpus)
      python3 benchmarks/multi_gpu.py --out "$out/multi_gpu.json" ${MULTI_ARGS:-} || rc=1 ;;
    claims)
      rm -rf "$out/h200"
      python3 benchmarks/h200_claims.py --only "${CLAIMS:-vit_b16}" --out "$out/h200" || rc=1
      tar czf "$out/h200_claims.tar.gz" -C "$out" h200 && rm -rf "$out/h200" ;;
    *) echo "unknown part: $part (tests, fidelity, lowp, sweep, report, multi, claims)"; exit 2 ;;
  esac
done
exit $rc
