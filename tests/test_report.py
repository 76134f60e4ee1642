"""The HTML report: from a real CPU sweep (images are real PNGs, links resolve, every run is named), and from
written tables for what a CPU sweep cannot give (GPU samples, a fastest run that is not fp32, all failed)."""
from __future__ import annotations

import html
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline import results
from pipeline.analysis import plots, report, select, sweeps
from tests.conftest import run_cli

SWEEP = ["-m", "precision=fp32,int8,bf16", "benchmark.duration_s=0.2", "benchmark.warmup_ms=20",
         "benchmark.min_iterations=5", "validate.batches=1", "backend=onnxruntime"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.targets: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.targets += [v for k, v in attrs if k in ("src", "href") and v is not None]


def links(index: Path) -> list[str]:
    parser = _Links()
    parser.feed(index.read_text())
    return parser.targets


def check_png(path: Path) -> None:
    import matplotlib.image

    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, path
    assert len(data) > 5_000, (path, len(data))
    pixels = matplotlib.image.imread(path)
    assert pixels.shape[0] > 200 and pixels.shape[1] > 300, (path, pixels.shape)
    assert pixels[..., :3].std() > 0.05, f"{path} is (nearly) one colour"


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("report_sweep")
    proc = run_cli(SWEEP, cwd)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    sweep_dir = next((cwd / "outputs/sweeps/multirun").iterdir())
    made = run_cli([str(sweep_dir)], cwd, module="pipeline.report")
    assert made.returncode == 0, made.stderr
    return sweep_dir, sweep_dir / "report" / "index.html", made


@pytest.mark.slow  # the real CLI
def test_cli_writes_the_default_location(sweep):
    sweep_dir, index, made = sweep
    assert index.is_file()
    assert str(index) in made.stdout


@pytest.mark.slow  # the real CLI
def test_every_image_is_a_real_png(sweep):
    _, index, _ = sweep
    images = [t for t in links(index) if t.endswith(".png")]
    # latency, accuracy, distribution, layers; no GPU plot on a CPU
    assert sorted(images) == ["accuracy.png", "distribution.png", "latency.png", "layers.png"]
    for name in images:
        check_png(index.parent / name)


@pytest.mark.slow  # the real CLI
def test_html_references_only_files_that_exist(sweep):
    _, index, _ = sweep
    targets = links(index)
    assert targets
    for target in targets:
        assert not target.startswith(("http:", "https:", "//")), target  # viewable with no network
        assert (index.parent / target).is_file(), target


@pytest.mark.slow  # the real CLI
def test_every_run_is_named_with_its_status_and_reason(sweep):
    sweep_dir, index, _ = sweep
    page = index.read_text()
    runs = results.load(sweep_dir).runs
    assert len(runs) == 3
    for run in runs.itertuples():
        assert run.run_id in page
    bf16 = runs.set_index("precision").loc["bf16"]
    assert bf16.status == "unsupported" and "bf16" in bf16.error
    assert html.escape(bf16.error) in page
    assert "1 point not shown: unsupported: bf16" in page
    assert "No GPU samples" in page


@pytest.mark.slow  # the real CLI
def test_profile_rows_land_in_layers(sweep):
    sweep_dir, _, _ = sweep
    r = results.load(sweep_dir)
    ok = set(r.runs.loc[r.runs.status == "ok", "run_id"])
    assert set(r.layers.run_id) == ok and len(ok) == 2
    assert (r.layers.source == "onnxruntime-profiler").all()
    assert (r.layers.time_ms > 0).all() and (r.layers.layer_type != "").all()
    for run_id, share in r.layers.groupby("run_id")["share"].sum().items():
        assert share == pytest.approx(1.0), run_id
    assert (r.runs.loc[r.runs.status == "ok", "profile_cache"] == "off").all()


@pytest.mark.slow  # the real CLI
def test_missing_path_is_an_error(tmp_path):
    proc = run_cli([str(tmp_path / "nothing")], tmp_path, module="pipeline.report")
    assert proc.returncode == 2 and "does not exist" in proc.stderr


# --------------------------------------------------------------------------- from written tables


def write_job(root: Path, job: int, precision: str, status: str = "ok", *, batch_size: int = 1,
              median: float = 1.0, error: float | None = 0.01, layers: dict | None = None,
              gpu: bool = False, reason: str | None = None, sweep: str = "grid", started: str | None = None) -> str:
    run_id = f"run-{job}-{precision}-{batch_size}" + (f"-{started}" if started else "")
    overrides = f"precision={precision} batch_size={batch_size} benchmark.duration_s=0.2"
    tables: dict = {"runs": [{"run_id": run_id, "sweep": sweep, "job": job, "status": status, "error": reason,
                              "started": started,
                              "backend": "onnxruntime", "model": "tiny_cnn", "precision": precision,
                              "batch_size": batch_size, "overrides": overrides, "duration_s": 1.0 + job}]}
    if status == "ok":
        rng = np.random.default_rng(job)
        values = median * (1 + 0.05 * rng.standard_normal(200))
        stats = {"median": median, "p90": median * 1.1, "p99": median * 1.3}
        tables["summary"] = [{"metric": "latency", "stat": k, "value": v, "unit": "ms"} for k, v in stats.items()]
        tables["summary"].append({"metric": "throughput", "stat": "samples_per_s",
                                  "value": 1000 * batch_size / median, "unit": "samples/s"})
        tables["samples"] = [{"trial": 0, "iteration": i, "metric": "latency", "value_ms": v}
                             for i, v in enumerate(values)]
        if error is not None:
            tables["accuracy"] = [{"output": "logits", "metric": "rel_l2_err", "value": error, "reference": "fp32"}]
        if layers:
            total = sum(layers.values())
            tables["layers"] = [{"layer": name, "layer_type": "Conv", "dtype": "float", "tactic": "", "stream": 0,
                                 "time_ms": t, "share": t / total, "source": "test"} for name, t in layers.items()]
        if gpu:
            t = np.arange(0, 5, 0.1)
            tables["gpu"] = {"t_s": list(t), "sm_clock_mhz": list(1980 - 8 * t * job),
                             "temp_c": list(45 + 3 * t)}
    for name, rows in tables.items():  # as pipeline.run.job writes them: run_id on every row
        if name != "runs":
            tables[name] = ({"run_id": [run_id] * len(next(iter(rows.values()))), **rows} if isinstance(rows, dict)
                            else [{"run_id": run_id, **row} for row in rows])
    results.write_tables(root / str(job), tables)
    return run_id


@pytest.fixture
def grid(tmp_path):
    """A 2x2 grid plus one failed point; int8 at batch 8 is fastest, GPU samples on two runs."""
    specs = [("fp32", 1, 1.0, 1e-7), ("fp32", 8, 3.0, 2e-7), ("int8", 1, 0.6, 1e-2), ("int8", 8, 0.4, 2e-2)]
    ids = [write_job(tmp_path, j, p, batch_size=b, median=m, error=e, gpu=j < 2,
                     layers={f"conv{i}": (i + 1) * m / 10 for i in range(16)})
           for j, (p, b, m, e) in enumerate(specs)]
    ids.append(write_job(tmp_path, 4, "fp8", "failed", batch_size=8, reason="build: RuntimeError: boom"))
    return tmp_path, ids


def test_grid_report(grid, tmp_path_factory):
    root, ids = grid
    out = tmp_path_factory.mktemp("grid_report")
    index = report.build_report(root, out)
    assert index == out / "index.html"
    page = index.read_text()
    for run_id in ids:
        assert run_id in page
    assert "build: RuntimeError: boom" in page
    assert "1 point not shown: failed: fp8 batch_size=8" in page
    # both axes are found from the overrides; a constant override (benchmark.duration_s) is not one
    assert "Swept: precision, batch_size." in page
    # fp32@8 is slower and less accurate than fp32@1; every other point is on the front
    assert ("Pareto front (no other point is both faster and more accurate): fp32 batch_size=1, "
            "int8 batch_size=1, int8 batch_size=8") in page
    images = sorted(t for t in links(index) if t.endswith(".png"))
    assert images == ["accuracy.png", "distribution.png", "gpu.png", "latency.png", "layers.png"]
    for name in images:
        check_png(out / name)
    # the fastest run (int8 at batch 8) is profiled beside the fp32 run of the same batch size
    view, swept = report.run_view(results.load(root))
    fastest = view.sort_values("median").iloc[0]
    assert report._baseline(view[view.status == "ok"], fastest, swept).run_id == ids[1]


def test_all_failed_still_lists_every_run(tmp_path):
    ids = [write_job(tmp_path, 0, "fp32", "failed", reason="export: config: model.path missing"),
           write_job(tmp_path, 1, "bf16", "unsupported", reason="build: no bf16 kernel")]
    index = report.build_report(tmp_path)
    assert index == tmp_path / "report" / "index.html"
    page = index.read_text()
    assert "No run succeeded" in page
    for run_id in ids:
        assert run_id in page
    assert "no bf16 kernel" in page and "model.path missing" in page
    assert "2 points not shown: failed: fp32; unsupported: bf16" in page
    assert not [t for t in links(index) if t.endswith(".png")]
    assert not list((tmp_path / "report").glob("*.png"))


def test_no_runs_at_all(tmp_path):
    with pytest.raises(FileNotFoundError, match="no results"):
        report.build_report(tmp_path)


def test_rebuild_drops_plots_it_no_longer_makes(grid):
    root, _ = grid
    report.build_report(root)
    assert (root / "report" / "gpu.png").is_file()
    for job in (0, 1):  # the runs with GPU samples go away
        (root / str(job) / "tables" / "gpu.parquet").unlink()
        (root / str(job) / "tables" / results.MANIFEST).unlink()  # else load() skips the job as tampered with
    report.build_report(root)
    assert not (root / "report" / "gpu.png").exists()


def test_pareto_mask():
    latency = np.array([1.0, 2.0, 0.5, 2.0, 1.0])
    error = np.array([0.1, 0.01, 0.5, 0.02, 0.1])
    # 3 is dominated by 1; 0 and 4 are equal (neither dominates the other)
    assert list(plots.pareto_mask(latency, error)) == [True, True, True, False, True]


def test_no_pareto_front_over_a_difference_within_the_noise():
    # int8 is 2 % faster than fp16 but less accurate: on the front without noise, a tie within +-5 % noise, so the
    # more accurate fp16 dominates it; a 40 % faster point stays on the front
    latency, error = np.array([0.50, 0.49, 0.30]), np.array([0.001, 0.05, 0.08])
    assert list(plots.pareto_mask(latency, error)) == [True, True, True]
    assert list(plots.pareto_mask(latency, error, np.array([5.0, 5.0, 5.0]))) == [True, False, True]
    assert list(plots.pareto_mask(latency, error, np.array([1.0, 1.0, 1.0]))) == [True, True, True]  # beyond 1 %


def test_swept_values_from_overrides_and_axes(tmp_path):
    write_job(tmp_path, 0, "fp32")
    write_job(tmp_path, 1, "int8")
    runs = results.load(tmp_path).runs
    assert list(sweeps.swept_values(runs).columns) == ["precision"]
    runs["overrides"] = None  # e.g. tables written by another tool: the fixed columns still tell
    runs.loc[1, "model"] = "resnet18"
    assert list(sweeps.swept_values(runs).columns) == ["model", "precision"]


@pytest.mark.parametrize("column", ["profile_layers_overlap", "benchmark_layers_overlap"])
def test_layers_caption_says_when_layer_times_overlap(tmp_path, column):
    layers = {f"conv{i}": (i + 1) / 10 for i in range(4)}
    write_job(tmp_path, 0, "fp32", layers=layers)
    write_job(tmp_path, 1, "int8", median=0.5, layers=layers)
    plain = report.build_report(tmp_path, tmp_path / "plain").read_text()
    assert "overlap across auxiliary streams" not in plain
    runs = tmp_path / "1" / "tables" / "runs.parquet"  # the int8 run ran with auxiliary streams
    table = pq.read_table(runs)
    pq.write_table(table.append_column(column, pa.array([True])), runs)
    (runs.parent / results.MANIFEST).unlink()  # rewritten by hand: no longer the tables the job published
    page = report.build_report(tmp_path, tmp_path / "overlap").read_text()
    assert "Per-layer times overlap across auxiliary streams in int8" in page
    assert "do not add up to the inference time" in page


# --------------------------------------------------------------------------- several sweeps, the selected point

STAMPS = ("2026-01-01_10-00-00", "2026-01-02_10-00-00")


@pytest.fixture
def two_sweeps(tmp_path):
    """The same precision sweep run twice (two sweep directories, the same points); the second one selected."""
    for day, stamp in enumerate(STAMPS):
        where = tmp_path / "precision" / stamp
        for job, precision in enumerate(("fp32", "int8")):
            write_job(where, job, precision, median=(1.0 + day) / (1 + job), sweep="precision",
                      started=f"2026-01-0{day + 1}T10:00:0{job}")
    select.select_sweep(tmp_path / "precision" / STAMPS[1])
    return tmp_path


def test_two_sweeps_keep_their_points_apart(two_sweeps):
    loaded = results.load(two_sweeps)
    alone, _ = report.run_view(loaded)  # without knowing the sweeps: the points collide
    assert list(alone["label"]).count("fp32 #0") == 2
    view, swept = report.run_view(loaded, report.sweep_dirs(two_sweeps).by_run)
    assert list(swept.columns) == ["precision"]
    assert list(view["label"]) == [f"{p} (precision {s})" for s in STAMPS for p in ("fp32", "int8")]
    page = report.build_report(two_sweeps).read_text()
    for label in view["label"]:
        assert html.escape(label) in page
    assert "<th>sweep</th>" in page and "#0" not in page


def test_the_selected_point_is_marked(two_sweeps):
    page = report.build_report(two_sweeps).read_text()
    chosen = "int8 (precision 2026-01-02_10-00-00)"  # the faster point of the sweep that has a selection.json
    assert f"{chosen} <strong>&#9733; selected</strong>" in page
    assert page.count("&#9733; selected") == 1
    assert '<p class="best">best: precision=int8 1 ms median latency (1,000 samples/s), 2.0x faster than fp32' in page
    assert ("The star marks the selected build (the fastest within the accuracy bounds of select.*, one per "
            f"workload): {chosen}.") in page


@pytest.mark.slow  # the real CLI
def test_report_cli_of_two_sweeps(two_sweeps):
    made = run_cli([str(two_sweeps)], two_sweeps, module="pipeline.report")
    assert made.returncode == 0, made.stderr
    page = (two_sweeps / "report" / "index.html").read_text()
    assert "fp32 (precision 2026-01-01_10-00-00)" in page and "fp32 (precision 2026-01-02_10-00-00)" in page


def test_a_report_of_a_directory_without_results_is_an_error_like_select_and_compare(tmp_path):
    proc = run_cli([str(tmp_path)], tmp_path, module="pipeline.report", timeout=120)
    assert proc.returncode == 2 and "no results" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert not (tmp_path / "report").exists()


def test_the_runs_table_shows_the_interval_the_task_metric_and_the_samples(tmp_path):
    from tests import test_select

    sweep = tmp_path / "labelled"
    test_select.write_job(sweep, 0, "fp32", 1.0, accuracy=test_select.paired_rows(359, 0, 0))
    test_select.write_job(sweep, 1, "int8", 0.5, accuracy=test_select.paired_rows(359, 1, 4))
    select.select_sweep(sweep)
    page = report.build_report(sweep).read_text()
    drop = select.paired.drop(359, 1, 4)
    assert "<th>top-1 drop [95 % interval]</th>" in page and "<th>samples</th>" in page
    assert f"<td>{drop.value:.3f} [{drop.low:.3f}, {drop.high:.3f}]</td>" in page
    assert '<td class="num">359</td>' in page
    assert "too few samples to decide" in page  # int8 is faster but undecided, said in the best line
    assert f"<td>upper end {drop.high:.3f} &gt; select.max_accuracy_drop</td>" in page  # which bound decided
    regression = tmp_path / "regression"
    test_select.write_job(regression, 0, "fp32", 1.0, accuracy=test_select.regression_rows(0.45, 43.0))
    test_select.write_job(regression, 1, "fp16", 0.6, accuracy=test_select.regression_rows(0.449, 43.5))
    page = report.build_report(regression).read_text()
    assert "<th>r2</th><th>r2 drop</th><th>samples</th>" in page and '<td class="num">0.449</td>' in page
    assert "top-1 drop" not in page  # no labels of classes: no top-1 columns


def test_point_labels_never_overlap_even_on_nearly_coincident_points():
    """Eight builds within 0.01 % of each other on both axes and one far away: every label is drawn, inside the
    figure, and no two labels' boxes (as the renderer measures them) intersect, nor a label a point's marker."""
    from itertools import combinations

    from matplotlib.text import Text

    names = [f"precision={p}" for p in ("fp32", "fp16", "bf16", "int8", "fp8", "tf32", "int4", "mixed")]
    points = pd.DataFrame({"label": [*names, "far"], "median": [*(1.0 + np.arange(8) * 1e-4), 3.0],
                           "error": [*(0.01 + np.arange(8) * 1e-6), 0.02], "selected": [True] + [False] * 8})
    fig = plots.accuracy_latency_figure(points, "rel_l2_err", note="1 point not shown")
    fig.draw_without_rendering()
    renderer = fig.canvas.get_renderer()
    ax = fig.axes[0]
    boxes = {t.get_text(): Text.get_window_extent(t, renderer) for t in ax.texts}
    assert sorted(boxes) == sorted(points["label"])
    overlapping = [(a, b) for a, b in combinations(boxes, 2) if boxes[a].overlaps(boxes[b])]
    assert overlapping == []
    whole = fig.bbox
    assert all(whole.x0 <= b.x0 and b.x1 <= whole.x1 and whole.y0 <= b.y0 and b.y1 <= whole.y1 for b in boxes.values())
    markers = ax.transData.transform(points[["median", "error"]].to_numpy(float))
    assert not any(b.contains(x, y) for b in boxes.values() for x, y in markers)
