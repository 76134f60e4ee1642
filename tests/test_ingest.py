"""`python -m pipeline.ingest trtexec ...` end to end: the real CLI into a temp directory, then `load()`.
The fixtures in tests/data/trtexec/ are hand-written in trtexec's documented formats (README there)."""
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from pipeline import results
from tests.conftest import run_cli

DATA = Path(__file__).parent / "data" / "trtexec"
STATS = {"min", "max", "mean", "median", "p90", "p95", "p99"}


def ingest(cwd, *args):
    return run_cli(["trtexec", *map(str, args)], cwd, module="pipeline.ingest", timeout=120)


@pytest.fixture(scope="module")
def trt11(tmp_path_factory):
    out = tmp_path_factory.mktemp("ingest") / "trt11"
    proc = ingest(out.parent, DATA / "trt11_run.log", "--times", DATA / "trt11_times.json", "--profile",
                  DATA / "trt11_profile.json", "--layers", DATA / "trt11_layer_info.json", "--out", out)
    assert proc.returncode == 0, proc.stderr
    return proc, results.load(out)


def test_runs_row(trt11):
    proc, r = trt11
    assert "ingested" in proc.stdout and "verdict stable" in proc.stdout
    assert len(r.runs) == 1
    row = r.runs.iloc[0]
    assert (row.status, row.backend, row.model, row.batch_size) == ("ok", "trtexec", "tiny_cnn_fp16", 8)
    assert (row.env_tensorrt, row.env_gpu, row.env_compute_capability) == ("11.1.0", "NVIDIA H100 80GB HBM3", "9.0")
    assert (row.warmup_ms, row.min_iterations) == (200.0, 12)
    assert (row.benchmark_iterations, row.benchmark_warmup_iterations) == (12, 4521)
    assert row.benchmark_verdict == "stable" and bool(row.benchmark_cuda_graph) and row.benchmark_sync == "spin"
    assert row.benchmark_profiled_inferences == 12 and "--loadEngine=tiny_cnn_fp16.engine" in row.config
    assert row.started == "2026-11-21T10:15:02" and row.job_seconds == 1.0 and row.duration_s == 0.0  # --duration=0


def test_summary(trt11):
    _, r = trt11
    s = r.summary.set_index(["metric", "stat"])["value"]
    for metric in ("latency", "enqueue", "h2d", "gpu_compute", "d2h"):
        assert STATS | {"p99.9"} <= set(r.summary.query("metric == @metric").stat), metric
    assert s[("throughput", "qps")] == 182039 and s[("throughput", "samples_per_s")] == 182039 * 8
    assert s[("gpu_compute", "median")] == 0.004096 and s[("enqueue", "mean")] == 0.00201867
    assert s[("host_walltime", "total")] == pytest.approx(6.592e-05)
    assert s[("gpu_compute", "total")] == pytest.approx(4.9376e-05)
    assert s[("gpu_compute", "cov")] == pytest.approx(1.02676, rel=1e-4)  # from the exported times
    assert ("h2d", "cov") not in s.index  # transfers were off: nothing to vary
    assert set(r.summary.query("stat == 'total'").unit) == {"s"}
    assert r.metric("gpu_compute", "median")["gpu_compute_median"].tolist() == [0.004096]


def test_samples_and_layers(trt11):
    _, r = trt11
    assert len(r.samples) == 12 * 5 and set(r.samples.metric) == {"latency", "enqueue", "h2d", "gpu_compute", "d2h"}
    assert r.samples.query("metric == 'gpu_compute'").value_ms.iloc[0] == 0.004096
    layers = r.layers
    assert len(layers) == 7 and set(layers.source) == {"trtexec-profile"}
    assert layers.share.sum() == pytest.approx(1.0)
    conv = layers.set_index("layer").loc["node_Conv_58 + node_relu_1"]
    assert (conv["layer_type"], conv["dtype"], conv["stream"]) == ("CaskConvolution", "fp16", 1)
    assert conv["time_ms"] == 0.001152


def test_unstable_10x_log_without_times(tmp_path):
    out = tmp_path / "trt10"
    proc = ingest(tmp_path, DATA / "trt10_build_and_run.log", "--profile", DATA / "trt10_profile.json",
                  "--layers", DATA / "trt10_layer_info.json", "--out", out)
    assert proc.returncode == 0, proc.stderr
    r = results.load(out)
    row = r.runs.iloc[0]
    assert row.benchmark_verdict == "unstable" and row.benchmark_unstable_cov_pct == 4.07812
    assert "coefficient of variance = 4.07812%" in row.benchmark_warnings
    assert (row.optimization_level, row.max_aux_streams, row.trtexec_workspace_mb) == (3, 0, 1024.0)
    assert bool(row.benchmark_data_transfers) and not bool(row.benchmark_cuda_graph) and not bool(row.trtexec_tf32)
    s = r.summary.set_index(["metric", "stat"])["value"]
    assert s[("gpu_compute", "cov")] == 4.07812 and s[("d2h", "min")] == pytest.approx(8.1e-05)
    assert s[("throughput", "samples_per_s")] == pytest.approx(10520.4 * 8)
    assert r.samples.empty
    assert r.layers.set_index("layer").loc["node_Reshape_64", "share"] == 0  # ran, took no time


def test_failed_log_is_a_failed_row(tmp_path):
    proc = ingest(tmp_path, DATA / "trt10_failed.log", "--out", tmp_path / "failed")
    assert proc.returncode == 1 and "FAILED" in proc.stderr
    row = results.load(tmp_path / "failed").runs.iloc[0]
    assert row.status == "failed" and "Performance summary" in row.error and row.env_tensorrt == "10.16.0"


def test_missing_file_is_a_usage_error(tmp_path):
    proc = ingest(tmp_path, DATA / "trt11_run.log", "--times", tmp_path / "nope.json", "--out", tmp_path / "x")
    assert proc.returncode == 2 and "no such file" in proc.stderr and "nope.json" in proc.stderr
    assert not (tmp_path / "x").exists()


def test_ingested_runs_load_beside_each_other(tmp_path):
    for name in ("trt10_build_and_run.log", "trt11_run.log"):
        assert ingest(tmp_path, DATA / name, "--out", tmp_path / "all" / name).returncode == 0
    r = results.load(tmp_path / "all")
    assert sorted(r.runs.env_tensorrt) == ["10.16.0", "11.1.0"] and r.runs.run_id.is_unique
    assert set(r.summary.run_id) == set(r.runs.run_id)


def test_layers_with_an_auxiliary_stream_are_flagged_and_keep_their_median(trt11):
    proc, r = trt11
    row = r.runs.iloc[0]
    assert bool(row.benchmark_layers_overlap) and "do not add up" in row.benchmark_layers_note
    assert "note: per-layer times overlap" in proc.stderr
    medians = r.layers.set_index("layer")["median_ms"]
    assert medians["output_cast_to_fp32"] == 0.00016 and medians["node_Gemm_65"] == 0.000256


def test_a_summary_cut_short_is_a_failed_row_naming_the_lines(tmp_path):
    lines = (DATA / "trt11_run.log").read_text().splitlines(keepends=True)
    cut = tmp_path / "cut.log"
    cut.write_text("".join(lines[:next(i for i, line in enumerate(lines) if "] GPU Compute Time:" in line)]))
    proc = ingest(tmp_path, cut, "--out", tmp_path / "cut")
    assert proc.returncode == 1 and "incomplete" in proc.stderr
    row = results.load(tmp_path / "cut").runs.iloc[0]
    assert row.status == "failed" and str(cut) in row.error
    for label in ("'GPU Compute Time:'", "'D2H Latency:'", "'Total Host Walltime:'", "'Total GPU Compute Time:'"):
        assert label in row.error, row.error
    assert "'Latency:'" not in row.error and "'Throughput:'" not in row.error  # those were there
    assert results.load(tmp_path / "cut").summary.empty  # no partial statistics


def test_a_pasted_summary_without_the_end_banner_is_ok_with_a_note(tmp_path):
    text = (DATA / "trt11_run.log").read_text()
    pasted = tmp_path / "pasted.log"
    pasted.write_text(text[text.index("[11/21/2026-10:15:03] [I] === Performance summary ==="):text.index("&&&&", 10)])
    proc = ingest(tmp_path, pasted, "--out", tmp_path / "pasted")
    assert proc.returncode == 0, proc.stderr
    row = results.load(tmp_path / "pasted").runs.iloc[0]
    assert row.status == "ok" and "&&&& PASSED" in row.benchmark_note
    assert "note: the log has no final '&&&& PASSED' line" in proc.stderr


def test_ingesting_into_a_directory_that_holds_a_job_keeps_the_old_tables(tmp_path):
    out = tmp_path / "job"
    assert ingest(tmp_path, DATA / "trt10_build_and_run.log", "--out", out).returncode == 0
    first = results.load(out).runs.run_id.tolist()
    proc = ingest(tmp_path, DATA / "trt11_run.log", "--out", out)
    assert proc.returncode == 0, proc.stderr
    aside = sorted(out.glob("tables.replaced-*"))
    assert len(aside) == 1 and f"moved them aside to {aside[0]}" in proc.stderr
    assert results.load(out).runs.env_tensorrt.tolist() == ["11.1.0"]  # tables/ is the new run
    kept = pq.read_table(aside[0] / "runs.parquet")  # the old run is intact beside it
    assert kept.column("run_id").to_pylist() == first and kept.column("env_tensorrt").to_pylist() == ["10.16.0"]


def test_aux_streams_left_to_tensorrt_are_recorded_as_minus_one(tmp_path):
    text = (DATA / "trt10_build_and_run.log").read_text().replace("MaxAuxStreams: 0", "MaxAuxStreams: -1")
    (tmp_path / "auto.log").write_text(text)
    assert ingest(tmp_path, tmp_path / "auto.log", "--out", tmp_path / "auto").returncode == 0
    runs = results.load(tmp_path / "auto").runs
    assert runs.max_aux_streams.tolist() == [-1] and str(runs.max_aux_streams.dtype).lower() == "int64"


def test_out_naming_an_existing_file_is_one_line_and_leaves_it_alone(tmp_path):
    target = tmp_path / "results.txt"
    target.write_text("mine")
    proc = ingest(tmp_path, DATA / "trt11_run.log", "--out", target)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert f"--out {target}: a file is there" in proc.stderr and target.read_text() == "mine"


def test_a_run_profiled_in_its_timed_loop_is_failed_with_the_true_reason_and_keeps_its_layers(tmp_path):
    proc = ingest(tmp_path, DATA / "trt10_dump_profile_no_e2e.log", "--out", tmp_path / "prof")
    assert proc.returncode == 1 and "e2e network timing is not reported" in proc.stderr
    r = results.load(tmp_path / "prof")
    row = r.runs.iloc[0]
    assert row.status == "failed" and "--separateProfileRun" in row.error and "end banner" not in row.error
    assert row.env_tensorrt == "10.16.0" and row.benchmark_profiled_inferences == 27085
    assert len(r.layers) == 5 and r.summary.empty
    assert r.layers.set_index("layer").loc["node_mean", "time_ms"] == 0.002


@pytest.mark.parametrize("name, version, fmt, batch, job_seconds", [
    ("trt8_0_tf_names.log", "8.0.3", "trtexec 8.x+", 4, 7.0), ("trt7_run.log", None, "trtexec 7.x", None, 34.0),
    ("trt8_6_wrapped.log", "8.6.1", "trtexec 8.x+", 16, 19.0),
    ("trt10_pasted_no_timestamps.log", None, "trtexec 8.x+", None, None)])
def test_other_versions_and_prefixes_are_ingested(tmp_path, name, version, fmt, batch, job_seconds):
    proc = ingest(tmp_path, DATA / name, "--out", tmp_path / "out")
    assert proc.returncode == 0, proc.stderr
    r = results.load(tmp_path / "out")
    row = r.runs.iloc[0]
    assert row.status == "ok" and row.benchmark_log_format == fmt
    def known(value):
        return None if pd.isna(value) else value

    assert (known(row.env_tensorrt), known(row.batch_size), known(row.job_seconds)) == (version, batch, job_seconds)
    s = r.summary.set_index(["metric", "stat"])["value"]
    if batch:
        assert s[("throughput", "samples_per_s")] == pytest.approx(s[("throughput", "qps")] * batch)


def test_two_runs_appended_to_one_file_give_the_last_with_a_note(tmp_path):
    both = tmp_path / "both.log"
    both.write_text((DATA / "trt10_build_and_run.log").read_text() + (DATA / "trt11_run.log").read_text())
    proc = ingest(tmp_path, both, "--out", tmp_path / "both")
    assert proc.returncode == 0, proc.stderr
    row = results.load(tmp_path / "both").runs.iloc[0]
    assert (row.env_tensorrt, row.model, row.env_gpu) == ("11.1.0", "tiny_cnn_fp16", "NVIDIA H100 80GB HBM3")
    assert "2 trtexec runs" in row.benchmark_note and "note: the log holds 2 trtexec runs" in proc.stderr
    assert "--onnx=tiny_cnn.onnx" not in row.config  # nothing of the first run


def test_batch_size_zero_is_a_usage_error(tmp_path):
    proc = ingest(tmp_path, DATA / "trt11_run.log", "--batch-size", "0", "--out", tmp_path / "x")
    assert proc.returncode == 2 and "--batch-size 0" in proc.stderr and not (tmp_path / "x").exists()
