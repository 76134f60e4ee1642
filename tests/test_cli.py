"""The real CLI end to end on this CPU machine: default run, precision sweep, warm re-run, reproduce, bad input."""
import time

import pytest

from pipeline import results
from tests.conftest import FAST, run_cli

pytestmark = pytest.mark.slow


def only(paths):
    paths = list(paths)
    assert len(paths) == 1, paths
    return paths[0]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """One precision sweep with a fresh cache, then the same sweep again (warm)."""
    cwd = tmp_path_factory.mktemp("sweep")
    first = run_cli(["+sweep=precision", *FAST], cwd)
    sweep_dirs = sorted((cwd / "outputs/sweeps/precision").iterdir())
    second = run_cli(["+sweep=precision", *FAST], cwd)
    return cwd, first, second, sweep_dirs[0], sorted((cwd / "outputs/sweeps/precision").iterdir())[-1]


def test_default_run(workdir):
    proc = run_cli(FAST, workdir)
    assert proc.returncode == 0, proc.stderr
    assert "backend: auto -> onnxruntime" in proc.stdout
    run_dir = only((workdir / "outputs/runs").iterdir())
    assert (run_dir / ".hydra/config.yaml").is_file()
    assert "backend=onnxruntime" in (run_dir / ".hydra/overrides.yaml").read_text()  # the choice is pinned
    r = results.load(run_dir)
    row = r.runs.iloc[0]
    assert (row.status, row.backend, row.model, row.precision) == ("ok", "onnxruntime", "digits", "fp32")
    assert row.export_cache == "miss" and row.benchmark_cache == "off"
    median = r.summary.query("metric == 'latency' and stat == 'median'")["value"].iloc[0]
    assert 0 < median < 1000
    assert len(r.samples) >= 5 and (r.samples.value_ms > 0).all()
    acc = r.accuracy.set_index("metric")["value"]
    assert acc["rel_l2_err"] < 1e-5 and acc["top1_agreement"] == 1.0
    assert acc["top1_accuracy"] > 0.9 and set(r.accuracy.samples) == {359}  # the trained default, real labels
    # the printed short table
    assert "median latency" in proc.stdout and "throughput" in proc.stdout and "rel_l2_err" in proc.stdout
    assert "on 359 labelled samples" in proc.stdout


def test_precision_sweep(sweep):
    cwd, first, _, sweep_dir, _ = sweep
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    runs = results.load(sweep_dir).runs.set_index("precision")
    assert sorted(runs.index) == sorted(["fp32", "tf32", "fp16", "bf16", "int8", "fp8"])
    assert set(runs.loc[["fp32", "fp16", "int8", "fp8"], "status"]) == {"ok"}
    assert set(runs.loc[["bf16", "tf32"], "status"]) == {"unsupported"}
    assert "TF32" in runs.loc["tf32", "error"] and "bf16" in runs.loc["bf16", "error"]
    assert sorted(runs["export_cache"]) == ["hit"] * 5 + ["miss"]   # exported once
    assert (runs["sweep"] == "precision").all() and sorted(runs["job"]) == list(range(6))
    acc = results.load(sweep_dir).accuracy.query("metric == 'top1_agreement'")
    assert len(acc) == 4 and (acc["value"] > 0.5).all()   # every ok point agrees with fp32 on most inputs
    assert "4 ok, 2 unsupported" in first.stdout


def test_warm_rerun_recomputes_no_artifact(sweep):
    _, _, second, first_dir, second_dir = sweep
    assert second.returncode == 0
    assert first_dir != second_dir
    runs = results.load(second_dir).runs
    for stage in ("export", "convert", "build"):
        assert set(runs[f"{stage}_cache"].dropna()) == {"hit"}, stage
    # tf32 and bf16 stop at build (unsupported on the CPU provider); the other four reach it
    assert runs["export_cache"].notna().all() and runs["build_cache"].notna().sum() == 4


def test_reproduce_sweep_job(sweep):
    cwd, _, _, sweep_dir, _ = sweep
    proc = run_cli([str(sweep_dir / "4"), "--out", "repro"], cwd, module="pipeline.reproduce")
    assert proc.returncode == 0, proc.stderr
    assert "config_hash same" in proc.stdout and "median latency" in proc.stdout
    old, new = results.load(sweep_dir / "4").runs.iloc[0], results.load(cwd / "repro").runs.iloc[0]
    assert new.config_hash == old.config_hash and new.precision == "int8" and new.run_id != old.run_id
    assert (new.export_cache, new.convert_cache, new.build_cache) == ("hit", "hit", "hit")
    assert (cwd / "repro/reproduction.json").is_file()


def test_reproduce_needs_a_recorded_job(workdir):
    proc = run_cli([str(workdir)], workdir, module="pipeline.reproduce")
    assert proc.returncode == 2 and "no recorded job here" in proc.stderr


@pytest.mark.parametrize("args, words", [
    (["precision=fp9"], ["precision", "fp32", "int8"]),
    (["backend=foo"], ["backend", "onnxruntime", "tensorrt"]),
    (["benchmark.duration=1"], ["duration"]),
    (["benchmark.min_iterations=abc"], ["benchmark.min_iterations", "abc"]),
    (["backend.execution_mod=parallel"], ["backend.execution_mod", "valid keys there:", "execution_mode"]),
])
def test_compose_errors_are_one_clear_message(workdir, args, words):
    proc = run_cli(args, workdir)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr + proc.stdout
    for word in words:
        assert word in proc.stderr, proc.stderr


@pytest.mark.parametrize("setup, args, words", [
    (None, ["benchmark.min_iterations=-1"], ["benchmark.min_iterations = -1", ">= 1"]),
    (None, ["benchmark.duration_s=nan"], ["benchmark.duration_s = nan", "finite"]),
    (None, ["benchmark.warmup_ms=inf"], ["benchmark.warmup_ms = inf", "finite"]),
    (None, ["model=onnx", "model.path=missing.onnx"], ["model.path = 'missing.onnx'", "not found"]),
    ("corrupt", ["model=onnx", "model.path=bad.onnx"], ["model.path = 'bad.onnx'", "not a readable ONNX"]),
])
def test_bad_input_fails_with_the_key(workdir, setup, args, words):
    if setup == "corrupt":
        (workdir / "bad.onnx").write_bytes(b"\x08\x07garbage that is not a protobuf model" * 10)
    proc = run_cli([*FAST, *args], workdir)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr + proc.stdout
    out = proc.stdout
    assert "FAILED" in out
    for word in words:
        assert word in out, out
    runs = results.load(workdir / "outputs").runs
    assert list(runs.status) == ["failed"] and words[0] in runs.error.iloc[0]


def test_bad_point_fails_alone_in_a_sweep(workdir):
    proc = run_cli(["-m", "benchmark.min_iterations=5,-1", *FAST[:2], "validate.batches=1"], workdir)
    assert proc.returncode == 1
    runs = results.load(workdir / "outputs").runs.set_index("min_iterations")
    assert runs.loc[5, "status"] == "ok" and runs.loc[-1, "status"] == "failed"
    assert "benchmark.min_iterations = -1" in runs.loc[-1, "error"]


def test_a_yaml_tag_in_a_user_config_dir_is_one_line(workdir):
    (workdir / "conf/model").mkdir(parents=True)
    (workdir / "conf/model/evil.yaml").write_text(
        "name: evil\nsource: builtin\nx: !!python/object/apply:os.system ['touch marker']\n")
    proc = run_cli(["--config-dir", "conf", "model=evil", *FAST], workdir)
    assert proc.returncode == 1 and "Traceback" not in proc.stdout + proc.stderr
    assert proc.stderr.strip().startswith("error:") and len(proc.stderr.strip().splitlines()) == 1
    assert "could not determine a constructor" in proc.stderr and "evil.yaml" in proc.stderr
    assert not (workdir / "marker").exists()


def test_an_unknown_key_lists_the_valid_ones(workdir):
    proc = run_cli(["benchmark.duration=1"], workdir)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "benchmark.duration" in proc.stderr and "valid keys there:" in proc.stderr and "duration_s" in proc.stderr


def test_point_that_cannot_be_composed_fails_alone(workdir):
    proc = run_cli(["-m", "precision=fp32,fp9", "hydra.sweep.dir=sweep", *FAST], workdir)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stdout + proc.stderr
    runs = results.load(workdir / "sweep").runs.set_index("precision")
    assert runs.loc["fp32", "status"] == "ok" and runs.loc["fp9", "status"] == "failed"
    error = runs.loc["fp9", "error"]
    assert "Could not find 'precision/fp9'" in error and "fp32 fp8 int8" in error and "search path" not in error
    assert "precision=fp9" in runs.loc["fp9", "overrides"]


@pytest.mark.parametrize("size", ["-1", "-3"])
def test_a_negative_batch_size_is_refused_by_name(workdir, size):
    """hydra.sweeper.max_batch_size=-1 used to run nothing and end with "no job wrote a runs table"."""
    proc = run_cli(["-m", "precision=fp32,int8", f"hydra.sweeper.max_batch_size={size}", "hydra.sweep.dir=sweep",
                    *FAST], workdir)
    assert proc.returncode == 1 and "Traceback" not in proc.stdout + proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"error: hydra.sweeper.max_batch_size = {size}: must be >= 0 (0 or null: all points in one batch)"]
    assert not list((workdir / "sweep").glob("*/.hydra"))  # no job started


def test_profile_can_be_switched_off_and_a_single_timing_is_a_result(workdir):
    """profile.enabled=false runs no profile; benchmark.min_iterations=1 with no time is one timing: a median with
    no noise interval, not a failure."""
    proc = run_cli(["profile.enabled=false", "benchmark.duration_s=0", "benchmark.warmup_ms=0",
                    "benchmark.min_iterations=1", "validate.batches=1"], workdir)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    r = results.load(workdir / "outputs")
    row = r.runs.iloc[0]
    assert r.layers.empty and "profile_cache" not in r.runs.columns and row.status == "ok"
    assert (row.benchmark_iterations, row.benchmark_noise_method) == (1, "none: one timing")
    assert "median_noise" not in set(r.summary.stat) and "median" in set(r.summary.stat)


def test_help_is_fast_and_lists_groups(workdir):
    proc = run_cli(["--help"], workdir)
    assert proc.returncode == 0
    for group in ("model:", "backend:", "precision:", "sweep:"):
        assert group in proc.stdout


def test_user_onnx_model_and_calibration_data(workdir):
    """model=onnx with the user's own file, and int8 calibrated on the user's .npz instead of random data."""
    import numpy as np
    import torch

    from stages.models import build_builtin

    torch.onnx.export(build_builtin("tiny_cnn", seed=3), (torch.randn(2, 3, 32, 32),), str(workdir / "mine.onnx"),
                      dynamo=False, input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    np.savez(workdir / "calib.npz", input=np.random.default_rng(0).standard_normal((16, 3, 32, 32), dtype=np.float32))
    proc = run_cli(["-m", "model=onnx", "model.path=mine.onnx", "model.name=mine", "precision=fp32,int8",
                    "convert.calibration.data=calib.npz", "hydra.sweep.dir=sweep", *FAST], workdir)
    assert proc.returncode == 0, proc.stdout[-3000:]
    runs = results.load(workdir / "sweep").runs.set_index("precision")
    assert set(runs["status"]) == {"ok"} and set(runs["model"]) == {"mine"}
    assert runs.loc["int8", "convert_calibration_source"] == "npz"
    assert runs.loc["int8", "convert_calibration_samples"] == 16
    assert runs.loc["int8", "convert_quantize_nodes"] > 0
    # the user's file is part of the cache key by content: same bytes hit, other bytes miss
    def export_cache():
        proc = run_cli(["model=onnx", "model.path=mine.onnx", "model.name=mine", *FAST], workdir)
        assert proc.returncode == 0
        return results.load(workdir / "outputs/runs").runs.sort_values("started").iloc[-1].export_cache

    assert export_cache() == "hit"
    torch.onnx.export(build_builtin("tiny_cnn", seed=4), (torch.randn(2, 3, 32, 32),), str(workdir / "mine.onnx"),
                      dynamo=False, input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    time.sleep(1)  # a new run directory (they are named by the second)
    assert export_cache() == "miss"


def test_a_sweep_where_nothing_could_run_exits_3(workdir):
    """Every point unsupported (tf32 and bf16 on ONNX Runtime's CPU provider): nothing failed, nothing was measured
    either, and a script must be able to tell that from the exit status."""
    proc = run_cli(["-m", "precision=tf32,bf16", *FAST], workdir)
    runs = results.load(workdir / "outputs").runs
    assert sorted(runs.status) == ["unsupported", "unsupported"]
    assert proc.returncode == 3, proc.stdout[-2000:] + proc.stderr[-2000:]
