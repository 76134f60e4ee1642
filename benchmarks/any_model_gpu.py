"""Transformers and big ViTs on the torch backend on a GPU: a Hugging Face BERT over a sequence sweep (its median
GPU time must grow with the length; one export of its weights serves every length), and the built-in ViT-L/16.

    python benchmarks/any_model_gpu.py --out docs/benchmarks/any_model_gpu.json [--duration 2]

Writes the JSON and a markdown table beside it (<out>.md). Needs a CUDA GPU and the pipeline's dependencies.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline import results  # noqa: E402

COMMON = ["backend=torch", "precision=bf16", "backend.compile=eager", "profile.enabled=false", "validate.batches=1"]
RUNS = {
    "bert_sequence": ["-m", "model=hf", "model.model_type=bert", "batch_size=32", "axes.sequence=32,128,512"],
    "vit_l16": ["-m", "model=vit_l16", "batch_size=32"],
}


def run(name: str, args: list[str], duration: float, work: Path) -> list[dict]:
    sweep = work / name
    cmd = [sys.executable, "-m", "pipeline", *args, *COMMON, f"benchmark.duration_s={duration}",
           f"hydra.sweep.dir={sweep}", "report.enabled=false"]
    proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True)
    print(proc.stdout[-3000:], proc.stderr[-2000:], sep="\n", flush=True)
    loaded = results.load(sweep)
    s = loaded.summary
    rows = []
    for run_row in loaded.runs.itertuples():
        def stat(metric, key, run_id=run_row.run_id):
            hit = s[(s.run_id == run_id) & (s.metric == metric) & (s.stat == key)]["value"]
            return float(hit.iloc[0]) if len(hit) else None
        acc = loaded.accuracy[(loaded.accuracy.run_id == run_row.run_id) & (loaded.accuracy.metric == "cosine")]
        rows.append({"run": name, "model_id": run_row.model_id, "status": run_row.status, "error": run_row.error,
                     "batch_size": int(run_row.batch_size),
                     "sequence": getattr(run_row, "axes_sequence", None),
                     "gpu_compute_median_ms": stat("gpu_compute", "median"), "cov_pct": stat("gpu_compute", "cov"),
                     "samples_per_s": stat("throughput", "samples_per_s"),
                     "cosine_vs_fp32": float(acc["value"].min()) if len(acc) else None,
                     "export_cache": getattr(run_row, "model_cache", None),
                     "sm_clock_median_mhz": getattr(run_row, "benchmark_sm_clock_median_mhz", None),
                     "throttle": getattr(run_row, "benchmark_throttle_reasons", None)})
    return rows


def markdown(rows: list[dict]) -> str:
    head = ("| run | model | batch | sequence | status | median GPU ms | CoV % | samples/s | cosine | SM MHz "
            "| throttle |")
    lines = [head, "|" + "---|" * 11]
    for r in rows:
        f = lambda v, spec: "-" if v is None or v != v else format(v, spec)  # noqa: E731
        lines.append(f"| {r['run']} | {r['model_id']} | {r['batch_size']} | {f(r['sequence'], '.0f')} | "
                     f"{r['status']} | {f(r['gpu_compute_median_ms'], '.3f')} | {f(r['cov_pct'], '.2f')} | "
                     f"{f(r['samples_per_s'], ',.0f')} | {f(r['cosine_vs_fp32'], '.5f')} | "
                     f"{f(r['sm_clock_median_mhz'], '.0f')} | {r['throttle'] or '-'} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--duration", type=float, default=2.0)
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="any-model-") as work:
        for name, run_args in RUNS.items():
            rows += run(name, run_args, args.duration, Path(work))
            args.out.write_text(json.dumps(rows, indent=2, default=str))
    args.out.with_suffix(".md").write_text(markdown(rows))
    print(markdown(rows))
    bert = sorted((r for r in rows if r["run"] == "bert_sequence" and r["status"] == "ok"),
                  key=lambda r: r["sequence"])
    grows = len(bert) == 3 and all(a["gpu_compute_median_ms"] < b["gpu_compute_median_ms"]
                                   for a, b in zip(bert, bert[1:]))
    print(f"BERT median GPU time grows with the sequence length: {grows}")
    return 0 if grows and all(r["status"] == "ok" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
