"""Tests for pipeline.results: the Parquet table contract, atomic writes and load()."""

from __future__ import annotations

import logging
import os

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline import results
from pipeline.results import SCHEMAS, TABLES, Results, load, write_tables


def run_row(run_id: str, **extra) -> dict:
    row = {
        "run_id": run_id, "sweep": "s", "job": 0, "status": "ok", "error": None,
        "backend": "tensorrt", "model": "resnet50", "precision": "fp16", "batch_size": 8,
        "optimization_level": 3, "max_aux_streams": 0, "overrides": "", "config_hash": "abc",
        "config": "{}", "started": "2025-01-01T00:00:00+00:00", "duration_s": 1.5,
    }
    row.update(extra)
    return row


SAMPLE_ROWS = {
    "summary": [{"run_id": "r1", "metric": "latency", "stat": "median", "value": 2.0, "unit": "ms", "counts": None}],
    "samples": [{"run_id": "r1", "trial": 0, "iteration": 1, "metric": "latency", "value_ms": 2.1}],
    "accuracy": [{"run_id": "r1", "output": "logits", "metric": "top1", "value": 0.76,
                  "reference": "onnxruntime", "samples": 256}],
    "layers": [{"run_id": "r1", "layer": "conv1", "layer_type": "Convolution", "dtype": "fp16",
                "tactic": "0x1f", "stream": 0, "time_ms": 0.05, "share": 0.1, "source": "trt", "median_ms": 0.04}],
    "gpu": [{"run_id": "r1", "t_s": 0.5, "sm_clock_mhz": 1980.0, "mem_clock_mhz": 2619.0,
             "power_w": 300.0, "temp_c": 55.0, "util_pct": 99.0, "throttle": "none"}],
    "layer_errors": [{"run_id": "r1", "layer": "fc2", "tensor": "h2", "op_type": "Gemm", "depth": 2,
                      "rel_err": 0.8, "cosine": 0.6, "max_abs_err": 3.0, "nan": 0, "inf": 0, "input_rel_err": 0.01,
                      "quantized": True, "qdq_nodes": "x_QuantizeLinear,x_DequantizeLinear", "first_over": True}],
    "predictions": [{"run_id": "r1", "output": "logits", "sample": 0, "run_correct": True, "reference_correct": False,
                     "agree": False, "run_error": 0.5, "reference_error": 0.25}],
}

# pandas dtype expected for each pyarrow type in the fixed schemas (see module docstring).
PANDAS_DTYPE = {pa.string(): "str", pa.int64(): "Int64", pa.float64(): "float64", pa.bool_(): "boolean",
                pa.int32(): "Int64", pa.float32(): "float32"}


def write_job(job_dir, run_id="r1", **extra):
    rows = {t: [dict(r, run_id=run_id) for r in v] for t, v in SAMPLE_ROWS.items()}
    return write_tables(job_dir, {"runs": [run_row(run_id, **extra)], **rows})


def test_round_trip_every_table(tmp_path):
    paths = write_job(tmp_path)
    assert sorted(p.name for p in paths) == sorted(f"{t}.parquet" for t in TABLES)
    res = load(tmp_path)
    assert res.runs.loc[0, "run_id"] == "r1" and res.runs.loc[0, "batch_size"] == 8
    for table, rows in SAMPLE_ROWS.items():
        df = getattr(res, table)
        assert list(df.columns) == SCHEMAS[table].names
        # a null string reads back as pandas' missing value (NaN): compare it as None
        assert df.astype(object).where(df.notna(), None).to_dict("records") == rows


def test_a_million_predictions_stay_small_and_load_back(tmp_path):
    import numpy as np

    from pipeline.analysis import paired

    n, rng = 1_000_000, np.random.default_rng(0)
    run, ref = rng.random(n) < 0.97, rng.random(n) < 0.97
    write_tables(tmp_path, {"runs": [run_row("r1")], "predictions": {
        "run_id": ["r1"] * n, "output": ["logits"] * n, "sample": np.arange(n, dtype=np.int32), "run_correct": run,
        "reference_correct": ref, "agree": run == ref}})
    size = (tmp_path / "tables" / "predictions.parquet").stat().st_size
    assert size < 600_000, size  # a few bits a sample, even for flags this random
    p = load(tmp_path).predictions
    assert len(p) == n and p["sample"].iloc[-1] == n - 1
    assert paired.counts(p["run_correct"], p["reference_correct"]) == paired.counts(run, ref)


def test_files_and_loaded_frames_have_fixed_types(tmp_path):
    write_job(tmp_path, gpu_name="H100", calib_samples=512, sparsity=0.5, tf32=True, notes=None)
    for table in TABLES:
        schema = pq.read_schema(tmp_path / "tables" / f"{table}.parquet")
        for field in SCHEMAS[table]:
            assert schema.field(field.name).type == field.type, (table, field.name)
    res = load(tmp_path)
    for table in TABLES:
        df = getattr(res, table)
        for field in SCHEMAS[table]:
            assert str(df[field.name].dtype) == PANDAS_DTYPE[field.type], (table, field.name)
    extras = pq.read_schema(tmp_path / "tables" / "runs.parquet")
    assert extras.field("gpu_name").type == pa.string()
    assert extras.field("calib_samples").type == pa.int64()
    assert extras.field("sparsity").type == pa.float64()
    assert extras.field("tf32").type == pa.bool_()
    assert extras.field("notes").type == pa.string()  # None everywhere -> string


def test_naming_conventions_fix_extra_types(tmp_path):
    # env_* and *_cache are strings, *_seconds float64, whatever the Python value.
    write_tables(tmp_path, {"runs": [run_row("r1", env_cuda_major=12, build_seconds=3, build_cache="hit")]})
    schema = pq.read_schema(tmp_path / "tables" / "runs.parquet")
    assert schema.field("env_cuda_major").type == pa.string()
    assert schema.field("build_seconds").type == pa.float64()
    assert load(tmp_path).runs.loc[0, "env_cuda_major"] == "12"


def test_missing_fixed_columns_are_null(tmp_path):
    write_tables(tmp_path, {"runs": [{"run_id": "r1", "status": "failed", "error": "boom"}],
                            "summary": [{"run_id": "r1", "metric": "m", "value": 1.0}]})
    res = load(tmp_path)
    assert list(res.runs.columns) == SCHEMAS["runs"].names
    assert res.runs.loc[0, "batch_size"] is pd.NA and str(res.runs["batch_size"].dtype) == "Int64"
    assert pd.isna(res.summary.loc[0, "stat"])


def test_empty_tables_not_written_and_load_gives_empty_frames(tmp_path):
    assert write_tables(tmp_path, {"runs": [run_row("r1")], "samples": [], "gpu": {"run_id": []}}) == [
        tmp_path / "tables" / "runs.parquet"]
    res = load(tmp_path)
    assert res.samples.empty and list(res.samples.columns) == SCHEMAS["samples"].names
    assert str(res.samples["trial"].dtype) == "Int64"


def test_write_again_replaces(tmp_path):
    write_tables(tmp_path, {"summary": [{"run_id": "a", "metric": "m", "stat": "mean", "value": 1.0}]})
    write_tables(tmp_path, {"summary": [{"run_id": "b", "metric": "m", "stat": "mean", "value": 2.0}]})
    assert load(tmp_path).summary["run_id"].tolist() == ["b"]


def test_columnar_input_matches_rows(tmp_path):
    n = 1000
    cols = {"run_id": ["r1"] * n, "trial": [i // 100 for i in range(n)],
            "iteration": list(range(n)), "metric": ["latency"] * n, "value_ms": [0.5 * i for i in range(n)]}
    write_tables(tmp_path / "col", {"samples": cols, "runs": {"run_id": ["r1"], "status": ["ok"], "seed": [7]}})
    rows = [dict(zip(cols, vals)) for vals in zip(*cols.values())]
    write_tables(tmp_path / "row", {"samples": rows, "runs": [{"run_id": "r1", "status": "ok", "seed": 7}]})
    a, b = load(tmp_path / "col"), load(tmp_path / "row")
    pd.testing.assert_frame_equal(a.samples, b.samples)
    pd.testing.assert_frame_equal(a.runs, b.runs)
    assert len(a.samples) == n and a.samples["value_ms"].iloc[-1] == 0.5 * (n - 1)
    assert str(a.runs["seed"].dtype) == "Int64"


def test_columnar_unequal_lengths_rejected(tmp_path):
    with pytest.raises(ValueError, match="different lengths"):
        write_tables(tmp_path, {"summary": {"run_id": ["a", "b"], "value": [1.0]}})


def test_unknown_key_in_long_table_raises(tmp_path):
    with pytest.raises(ValueError, match=r"'summary'.*'colour'"):
        write_tables(tmp_path, {"summary": [{"run_id": "r", "metric": "m", "value": 1.0, "colour": "red"}]})
    with pytest.raises(ValueError, match=r"'samples'.*'extra'"):
        write_tables(tmp_path, {"samples": {"run_id": ["r"], "extra": [1]}})
    assert not (tmp_path / "tables" / "summary.parquet").exists()


@pytest.mark.parametrize("table,row,match", [
    ("runs", {"run_id": "r", "batch_size": 1.5}, "batch_size"),       # would truncate silently
    ("runs", {"run_id": "r", "batch_size": "8"}, "batch_size"),
    ("runs", {"run_id": "r", "status": "great"}, "status"),
    ("runs", {"run_id": "r", "shape": [1, 3]}, "shape"),               # not a scalar
    ("samples", {"run_id": "r", "trial": True}, "trial"),
    ("summary", {"run_id": 5}, "run_id"),
])
def test_bad_values_rejected(tmp_path, table, row, match):
    with pytest.raises(ValueError, match=match):
        write_tables(tmp_path, {table: [row]})


def test_unknown_table_rejected(tmp_path):
    with pytest.raises(ValueError, match="bogus"):
        write_tables(tmp_path, {"bogus": [{"a": 1}]})


def make_sweep(root):
    """3 jobs whose runs rows have different extra columns."""
    write_tables(root / "job0", {"runs": [run_row("r0", job=0, env_gpu="H100", workspace_gb=8)],
                                 "summary": [{"run_id": "r0", "metric": "latency", "stat": "median",
                                              "value": 3.0, "unit": "ms"}]})
    write_tables(root / "job1", {"runs": [run_row("r1", job=1, calib_method="entropy", sparsity=0.5)],
                                 "summary": [{"run_id": "r1", "metric": "latency", "stat": "median",
                                              "value": 2.0, "unit": "ms"}]})
    write_tables(root / "job2", {"runs": [run_row("r2", job=2, status="failed", error="oom")]})


def test_load_sweep_unifies_runs_columns(tmp_path):
    make_sweep(tmp_path)
    res = load(tmp_path)
    runs = res.runs.set_index("run_id")
    assert list(runs.index) == ["r0", "r1", "r2"]  # path order
    assert list(res.runs.columns[:len(SCHEMAS["runs"])]) == SCHEMAS["runs"].names
    assert {"env_gpu", "workspace_gb", "calib_method", "sparsity"} <= set(runs.columns)
    assert runs.loc["r0", "env_gpu"] == "H100" and pd.isna(runs.loc["r1", "env_gpu"])
    assert runs.loc["r1", "calib_method"] == "entropy" and pd.isna(runs.loc["r0", "calib_method"])
    # int extra stays a (nullable) int even though other jobs lack it; float extra stays float
    assert str(runs["workspace_gb"].dtype) == "Int64"
    assert runs.loc["r0", "workspace_gb"] == 8 and runs.loc["r2", "workspace_gb"] is pd.NA
    assert str(runs["sparsity"].dtype) == "float64" and pd.isna(runs.loc["r0", "sparsity"])
    assert runs.loc["r2", "error"] == "oom"
    assert len(res.summary) == 2


def test_rows_keep_path_order_when_schemas_interleave(tmp_path):
    for i in range(5):
        extra = {"calib_method": "max"} if i % 2 else {"seed": i}
        write_tables(tmp_path / f"job{i}", {"runs": [run_row(f"r{i}", job=i, **extra)]})
    runs = load(tmp_path).runs
    assert runs["run_id"].tolist() == [f"r{i}" for i in range(5)]
    assert runs["seed"].tolist()[::2] == [0, 2, 4]


def test_load_job_dir_only_sees_that_job(tmp_path):
    make_sweep(tmp_path)
    res = load(tmp_path / "job1")
    assert res.runs["run_id"].tolist() == ["r1"]
    assert "env_gpu" not in res.runs.columns
    assert load(tmp_path / "job1" / "tables").runs["run_id"].tolist() == ["r1"]


def test_load_outputs_root_finds_runs_and_sweeps(tmp_path):
    write_job(tmp_path / "runs" / "2025-01-01" / "a", run_id="a")
    make_sweep(tmp_path / "sweeps" / "x" / "y")
    write_job(tmp_path / "cache" / "stale", run_id="cached")  # cache dirs are not results
    write_job(tmp_path / "runs" / "b" / "cache" / "c", run_id="cached2")
    res = load(tmp_path)
    assert sorted(res.runs["run_id"]) == ["a", "r0", "r1", "r2"]
    assert sorted(res.summary["run_id"]) == ["a", "r0", "r1"]
    assert res.samples["run_id"].tolist() == ["a"]


def test_incompatible_extra_types_become_strings(tmp_path, caplog):
    write_tables(tmp_path / "a", {"runs": [run_row("a", knob=3)]})
    write_tables(tmp_path / "b", {"runs": [run_row("b", knob="auto")]})
    with caplog.at_level(logging.WARNING, logger="pipeline.results"):
        runs = load(tmp_path).runs
    assert runs["knob"].tolist() == ["3", "auto"]
    assert "knob" in caplog.text


def test_int_and_float_extra_promote_to_float(tmp_path):
    write_tables(tmp_path / "a", {"runs": [run_row("a", lr=1)]})
    write_tables(tmp_path / "b", {"runs": [run_row("b", lr=0.5)]})
    assert load(tmp_path).runs["lr"].tolist() == [1.0, 0.5]


def test_truncated_file_skipped_and_reported(tmp_path, caplog):
    make_sweep(tmp_path)
    (tmp_path / "job1" / "tables" / results.MANIFEST).unlink()  # tables of an older writer: file by file
    bad = tmp_path / "job1" / "tables" / "runs.parquet"
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    with caplog.at_level(logging.WARNING, logger="pipeline.results"):
        res = load(tmp_path)
    assert res.runs["run_id"].tolist() == ["r0", "r2"]
    assert len(res.summary) == 2  # job1's other tables still load
    assert [p for p, _ in res.skipped] == [bad] and res.skipped[0][1]
    assert str(bad) in caplog.text
    assert "skipped=1" in repr(res)


def test_leftover_tmp_file_ignored(tmp_path):
    write_job(tmp_path)
    leftover = tmp_path / "tables" / f".runs.{os.getpid()}.deadbeef.tmp"
    leftover.write_bytes(b"PAR1 half a file")
    (tmp_path / "tables" / "runs.parquet.tmp").write_bytes(b"junk")
    res = load(tmp_path)
    assert len(res.runs) == 1 and res.skipped == []


def test_failed_rename_leaves_no_tables_and_no_residue(tmp_path, monkeypatch):
    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(results.os, "rename", boom)
    with pytest.raises(OSError, match="disk full"):
        write_tables(tmp_path, {"runs": [run_row("r")], "summary": [{"run_id": "r", "metric": "m", "value": 1.0}]})
    # decision: the error propagates, and the writer removes its own temporary directory
    assert list(tmp_path.iterdir()) == []


def test_failed_rename_keeps_previous_tables(tmp_path, monkeypatch):
    write_tables(tmp_path, {"runs": [run_row("old")]})
    real = os.rename

    def fail_publishing(src, dst):  # setting the old tables aside works; publishing the new ones fails
        if ".tmp" in os.path.basename(src):
            raise OSError("nope")
        real(src, dst)

    monkeypatch.setattr(results.os, "rename", fail_publishing)
    with pytest.raises(OSError):
        write_tables(tmp_path, {"runs": [run_row("new")]})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tables"]
    assert load(tmp_path).runs["run_id"].tolist() == ["old"]


def test_tables_appear_together_and_old_ones_are_set_aside(tmp_path, monkeypatch):
    seen = []
    real = os.rename

    def spy(src, dst):
        seen.append((os.path.basename(src), os.path.basename(dst), sorted(os.listdir(src))))
        real(src, dst)

    write_tables(tmp_path, {"runs": [run_row("r1")]})
    monkeypatch.setattr(results.os, "rename", spy)
    write_tables(tmp_path, {"runs": [run_row("r2")], "summary": [{"run_id": "r2", "metric": "m", "value": 1.0}]})
    (aside, aside_to, _), (tmp, final, files) = seen
    assert aside == "tables" and aside_to.startswith("tables.replaced-")
    assert tmp.startswith(f".tables.{os.getpid()}.") and tmp.endswith(".tmp") and final == "tables"
    assert files == [results.MANIFEST, "runs.parquet", "summary.parquet"]  # one rename publishes every table
    assert load(tmp_path).runs["run_id"].tolist() == ["r2"]  # the set-aside tables are not loaded


def test_a_job_without_complete_tables_is_named(tmp_path, caplog):
    write_tables(tmp_path / "0", {"runs": [run_row("r0")]})
    (tmp_path / "1").mkdir()
    (tmp_path / "1" / results.JOB_CONFIG).write_text("model: {}\n")  # started, never finished
    (tmp_path / "1" / ".tables.1.x.tmp").mkdir()                      # killed while writing its tables
    loaded = load(tmp_path)
    assert loaded.runs["run_id"].tolist() == ["r0"]
    assert [(p.name, why) for p, why in loaded.skipped] == [("1", results.INCOMPLETE)]
    assert "have no complete tables" in caplog.text


def test_loading_a_directory_without_results_warns(tmp_path, caplog):
    assert load(tmp_path).runs.empty
    assert "no results under" in caplog.text


def test_metric_joins_summary_value(tmp_path):
    make_sweep(tmp_path)
    df = load(tmp_path).metric("latency")
    assert df.set_index("run_id")["latency_median"].to_dict() == pytest.approx(
        {"r0": 3.0, "r1": 2.0, "r2": float("nan")}, nan_ok=True)
    assert len(df) == 3 and "env_gpu" in df.columns
    with pytest.raises(KeyError, match="throughput"):
        load(tmp_path).metric("throughput")


def test_metric_duplicate_run_rejected(tmp_path):
    row = {"run_id": "r", "metric": "m", "stat": "median", "value": 1.0}
    write_tables(tmp_path, {"runs": [run_row("r")], "summary": [row, row]})
    with pytest.raises(ValueError):
        load(tmp_path).metric("m")


def test_load_subset_of_tables(tmp_path):
    write_job(tmp_path)
    res = load(tmp_path, tables=["runs"])
    assert len(res.runs) == 1 and res.summary.empty
    with pytest.raises(ValueError, match="nope"):
        load(tmp_path, tables=["nope"])


def test_load_missing_path_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match="does-not-exist"):
        load(tmp_path / "does-not-exist")


def test_repr_is_short(tmp_path):
    write_job(tmp_path)
    text = repr(load(tmp_path))
    assert isinstance(load(tmp_path), Results)
    assert str(tmp_path) in text and "runs=1" in text and "samples=1" in text and "\n" not in text
