"""A point's measurements in a child process (pipeline/run/isolation.py, measuring stages asking their backend:
stages/runtime.py crash_prone): a crash there is that point's failed row, with the signal, and the sweep goes on.
The crash is simulated by a backend whose runtime kills its process (tests/fake_crash_backend.py)."""
from __future__ import annotations

import copy
import os

import pytest

from pipeline import results
from pipeline.run import job, runner
from stages import benchmark
from tests.conftest import FAST, run_cli


def crashy(base: dict, tmp_path, fault: str, isolate: bool = True) -> dict:
    cfg = copy.deepcopy(base)
    cfg["cache"]["dir"] = str(tmp_path / "cache")
    timing = {k: cfg["benchmark"][k] for k in ("warmup_ms", "min_iterations", "trials", "cuda_graph", "sync",
                                               "data_transfers", "streams")}
    cfg["backend"] = {
        "name": "crashy", "plugin": "tests.fake_crash_backend", "fault": fault, "isolate": isolate,
        "artifact": {"data": "first.data"},
        "dag": {"first": {"stage": "tests.fake_stages", "params": {"text": "a", "counter": str(tmp_path / "n")}},
                "benchmark": {"stage": "stages.benchmark", "inputs": {"data": "first.data"},
                              "params": {"feeds": cfg["feeds"], "seed": 0, **timing, "duration_s": 0.05}}}}
    return cfg


@pytest.mark.parametrize("fault, words", [("segfault", "crashed with signal SIGSEGV (11)"),
                                          ("exit", "exited with status 3 before reporting a result")])
def test_a_crashing_measurement_fails_its_point_and_the_next_point_runs(base_config, tmp_path, fault, words):
    first = job.run_job(crashy(base_config, tmp_path, fault), tmp_path / "0", job.JobMeta())
    second = job.run_job(crashy(base_config, tmp_path, "none"), tmp_path / "1", job.JobMeta())
    assert first.status == "failed" and first.error.startswith(f"benchmark: StageCrashed: {words}")
    assert second.status == "ok" and second.row["benchmark_cuda_graph"] is False, second.error
    runs = results.load(tmp_path).runs.sort_values("job_seconds")
    assert sorted(runs["status"]) == ["failed", "ok"]
    # the measurement ran in a child: not this process
    opened_by = int((tmp_path / "1" / "stages" / "benchmark" / "opened_by.pid").read_text())
    assert opened_by != os.getpid()


def test_a_backend_that_does_not_ask_measures_in_process(base_config, tmp_path):
    out = job.run_job(crashy(base_config, tmp_path, "none", isolate=False), tmp_path / "0", job.JobMeta())
    assert out.status == "ok", out.error
    assert int((tmp_path / "0" / "stages" / "benchmark" / "opened_by.pid").read_text()) == os.getpid()


def test_which_stages_are_isolated():
    asks = {"plugin": "tests.fake_crash_backend", "options": {"fault": "none", "isolate": True}}
    quiet = {**asks, "options": {"fault": "none", "isolate": False}}
    assert runner.Isolation("auto").applies(benchmark, asks) and runner.Isolation("all").applies(benchmark, asks)
    assert not runner.Isolation("none").applies(benchmark, asks)  # isolation.mode=none: nothing in a child
    assert not runner.Isolation("auto").applies(benchmark, quiet)
    onnx = {"plugin": "stages.onnxruntime", "options": {}}  # a plugin without measure_isolated: in-process
    assert not runner.Isolation("all").applies(benchmark, onnx)


@pytest.mark.parametrize("options, cuda, isolated", [
    ({"isolate_measurements": "auto", "device": "cuda"}, True, True),
    ({"isolate_measurements": "auto", "device": "cpu"}, True, False),
    ({"isolate_measurements": "auto", "device": "auto"}, True, True),
    ({"isolate_measurements": "auto", "device": "auto"}, False, False),
    ({"isolate_measurements": "always", "device": "cpu"}, False, True),
    ({"isolate_measurements": "never", "device": "cuda"}, True, False),
])
def test_torch_isolates_its_measurements_on_cuda_by_default(monkeypatch, options, cuda, isolated):
    torch = pytest.importorskip("torch")
    import stages.torch_backend as plugin

    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    assert plugin.measure_isolated(options) is isolated


@pytest.mark.slow
def test_a_two_point_sweep_survives_a_segfaulting_measurement(tmp_path):
    """The real CLI, one process for the sweep (Hydra's basic launcher): the first point's benchmark segfaults."""
    conf = tmp_path / "conf" / "backend"
    conf.mkdir(parents=True)
    (conf / "crashy.yaml").write_text(
        "defaults:\n  - /subgraph/benchmark@dag\n  - _self_\nname: crashy\nplugin: tests.fake_crash_backend\n"
        "fault: none\nisolate: true\nartifact: {data: first.data}\n"
        "dag:\n  first:\n    stage: tests.fake_stages\n    params: {text: a, counter: builds.txt}\n")
    proc = run_cli(["--config-dir", "conf", "-m", "backend=crashy", "backend.fault=segfault,none",
                    "hydra.sweep.dir=s", "profile.enabled=false", *FAST], tmp_path)
    runs = results.load(tmp_path / "s").runs.set_index("fault")
    assert runs.loc["segfault", "status"] == "failed", proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "crashed with signal SIGSEGV" in runs.loc["segfault", "error"]
    assert runs.loc["none", "status"] == "ok" and runs.loc["none", "benchmark_cuda_graph_reason"].startswith("host")


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["eager", "default"])
def test_torch_measured_in_children_builds_the_model_there_from_the_weights(tmp_path, mode):
    """backend.isolate_measurements=always on CPU (on CUDA it is auto's choice): the compile stage runs in a child
    too, and the benchmark and validate children each build the in-process callable again from the weights."""
    pytest.importorskip("torch")
    from tests.test_torch_lowp import compose

    cfg = compose("backend=torch", "model=tiny_cnn", "backend.device=cpu", f"backend.compile={mode}",
                  "backend.build=compile", "backend.isolate_measurements=always", "profile.enabled=false",
                  f"cache.dir={tmp_path / 'cache'}", *FAST)
    out = job.run_job(cfg, tmp_path / "j", job.JobMeta())
    assert out.status == "ok", out.error
    row = out.row
    assert row["compile_first_call_s"] > 0 and row["compile_path"] == ("eager" if mode == "eager" else "compile")
    assert row["validate_built_here_first_call_s"] > 0 and row["validate_rel_l2_err"] < 1e-5
    assert row["benchmark_cuda_graph"] is False and row["benchmark_iterations"] >= 5
    if mode == "default":  # the compile child filled Inductor's cache: the validate child's compile is served by it
        assert row["validate_built_here_inductor_cache"] == "hit"
