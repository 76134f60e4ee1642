"""The job runner on fake stages: status rows, cache outcomes, errors, config checks."""
import copy

import pytest

from pipeline import results
from pipeline.config.schema import ConfigError
from pipeline.run import job
from tests.conftest import config_with


def test_ok_job_writes_row_and_tables_and_hits_cache_second_time(base_config, tmp_path):
    cfg, counter = config_with(base_config, tmp_path)
    first = job.run_job(cfg, tmp_path / "j1", job.JobMeta())
    second = job.run_job(cfg, tmp_path / "j2", job.JobMeta())
    assert first.status == second.status == "ok"
    assert counter.read_text().count("built") == 2          # two cached nodes, built once each
    assert (first.row["first_cache"], first.row["second_cache"], first.row["measure_cache"]) == ("miss", "miss", "off")
    assert (second.row["first_cache"], second.row["second_cache"]) == ("hit", "hit")
    assert second.row["second_chars"] == 2 and second.row["measure_length"] == 2
    loaded = results.load(tmp_path / "j2")
    assert list(loaded.runs["status"]) == ["ok"]
    assert loaded.summary["value"].tolist() == [2.0]
    assert len(loaded.samples) == 2 and set(loaded.samples["run_id"]) == {second.run_id}
    assert first.row["config_hash"] == second.row["config_hash"]


def test_param_change_rebuilds_downstream(base_config, tmp_path):
    cfg, counter = config_with(base_config, tmp_path)
    job.run_job(cfg, tmp_path / "j1", job.JobMeta())
    cfg2, _ = config_with(base_config, tmp_path)
    cfg2["backend"]["dag"]["first"]["params"]["text"] = "z"
    out = job.run_job(cfg2, tmp_path / "j2", job.JobMeta())
    assert (out.row["first_cache"], out.row["second_cache"]) == ("miss", "miss")
    assert out.row["config_hash"] != job.config_hash(cfg)


def test_unsupported_and_crash_become_rows(base_config, tmp_path):
    cfg, _ = config_with(base_config, tmp_path, fail="unsupported")
    out = job.run_job(cfg, tmp_path / "u", job.JobMeta())
    assert out.status == "unsupported" and out.error == "first: this combination cannot run here"
    cfg, _ = config_with(base_config, tmp_path, fail="crash")
    out = job.run_job(cfg, tmp_path / "c", job.JobMeta())
    assert out.status == "failed"
    assert out.error.startswith("first: RuntimeError: boom") and "second line" not in out.error
    assert "Traceback" in (tmp_path / "c" / "error.txt").read_text()
    assert results.load(tmp_path / "c").runs["error"].iloc[0] == out.error


@pytest.mark.parametrize("where", ["runner", "tables"])
def test_an_exception_outside_the_stages_is_a_failed_row_with_its_traceback(base_config, tmp_path, monkeypatch,
                                                                              where):
    """A bug outside any stage (the runner, writing the tables) used to escape run_job: no row, no message."""
    cfg, _ = config_with(base_config, tmp_path)

    def broken(*args, **kwargs):
        raise LookupError("no such node\nsecond line")
    if where == "runner":
        monkeypatch.setattr(job.runner, "run", broken)
    else:  # the first attempt to write the tables raises something that is no OSError
        real, calls = job.write_row_and_tables, []

        def write_once_broken(*args, **kwargs):
            calls.append(1)
            return broken() if len(calls) == 1 else real(*args, **kwargs)
        monkeypatch.setattr(job, "write_row_and_tables", write_once_broken)
    out = job.run_job(cfg, tmp_path / "j", job.JobMeta(job=3, overrides=["precision=int8"]))
    assert out.status == "failed"
    assert out.error == "LookupError: no such node (traceback: error.txt)"
    trace = (tmp_path / "j" / job.ERROR_FILE).read_text()
    assert "Traceback" in trace and "broken" in trace and "second line" in trace
    row = results.load(tmp_path / "j").runs.iloc[0]
    assert (row.status, row.error, row.job) == ("failed", out.error, 3)


@pytest.mark.parametrize("key, value, words", [
    ("benchmark.min_iterations", -1, ["benchmark.min_iterations = -1", ">= 1"]),
    ("backend.optimization_level", 7, ["backend.optimization_level = 7", "0..5"]),
    ("backend.execution_mode", "sideways", ["backend.execution_mode = 'sideways'", "sequential, parallel"]),
    ("batch_size", 0, ["batch_size = 0"]),
])
def test_out_of_range_values_fail_naming_the_key(base_config, tmp_path, key, value, words):
    cfg = copy.deepcopy(base_config)
    node = cfg
    *parents, leaf = key.split(".")
    for part in parents:
        node = node[part]
    node[leaf] = value
    out = job.run_job(cfg, tmp_path, job.JobMeta())
    assert out.status == "failed"
    for word in words:
        assert word in out.error


def test_model_source_needs_its_key(base_config, tmp_path):
    cfg = copy.deepcopy(base_config)
    cfg["model"].update(source="onnx", path=None)
    with pytest.raises(ConfigError, match="model.path is not set"):
        from pipeline.config import schema
        schema.check(cfg)


def test_unavailable_backend_is_unsupported_with_how_to_get_it(base_config, tmp_path):
    cfg = copy.deepcopy(base_config)
    cfg["backend"] = {"name": "tensorrt", "plugin": "stages.tensorrt", "dag": {}, "optimization_level": 3,
                      "max_aux_streams": 0, "workspace_mb": 0, "timing_cache": True}
    out = job.run_job(cfg, tmp_path, job.JobMeta())
    assert out.status == "unsupported"
    assert "backend=tensorrt cannot run here" in out.error and "onnxruntime" in out.error


@pytest.mark.parametrize("value", ["high", 2.5, True])
def test_a_mistyped_option_with_a_fixed_runs_column_is_a_failed_row_naming_the_key(base_config, tmp_path, value):
    """`optimization_level` is a fixed int64 column of `runs`: a string there once broke the table and lost the
    job; now the job's row is written and the option's check names the key, the value and what is valid."""
    cfg = copy.deepcopy(base_config)
    cfg["backend"]["optimization_level"] = value
    out = job.run_job(cfg, tmp_path, job.JobMeta())
    row = results.load(tmp_path).runs.iloc[0]
    assert out.status == row.status == "failed"
    assert f"backend.optimization_level = {value!r}: expected int" in row.error, row.error


def test_the_config_column_and_file_are_yaml_safe_dump_text(base_config, tmp_path):
    """The row's config and the job's config file: yaml.safe_dump's text (PyYAML's emitter: libyaml's wraps a long
    quoted string elsewhere), dumped once for both."""
    import yaml

    cfg = copy.deepcopy(base_config)
    cfg["model"]["kwargs"] = {"note": "ünï ☃ " + "long words " * 20, "lines": "a\n\n  b\n", "odd": ["- x", ": y", "#z",
                              "yes", "null", "1e3", "", " lead", "trail ", "tab\there"], "nums": [1e-30, -0.0, 2**70]}
    out = job.run_job(cfg, tmp_path / "j", job.JobMeta())
    assert out.row["config"] == yaml.safe_dump(cfg, sort_keys=False)
    assert (tmp_path / "j" / job.CONFIG_FILE).read_text() == out.row["config"]


@pytest.mark.parametrize("mode", ["none", "all"])
def test_the_stage_seconds_count_its_work_and_its_imports_stand_beside(base_config, tmp_path, monkeypatch, mode):
    """A stage whose module and whose first-use library each take a while to import: `<stage>_seconds` holds its
    work alone, `<stage>_import_seconds` both imports (in a child process too, where it imports them afresh)."""
    import sys

    module_s, library_s, work_s = 0.4, 0.6, 0.3
    for name, seconds in (("MODULE_IMPORT", module_s), ("LIBRARY_IMPORT", library_s), ("WORK", work_s)):
        monkeypatch.setenv(f"FAKE_{name}_S", str(seconds))  # a child process (mode=all) sees them too
    for name in ("tests.fake_slow_import_stage", "tests.fake_heavy_library"):
        monkeypatch.delitem(sys.modules, name, raising=False)  # imported afresh by this job
    cfg = copy.deepcopy(base_config)
    cfg["cache"]["dir"] = str(tmp_path / "cache")
    cfg["isolation"]["mode"] = mode
    cfg["backend"]["dag"] = {"slow": {"stage": "tests.fake_slow_import_stage", "params": {"text": "a"}}}
    out = job.run_job(cfg, tmp_path / "j", job.JobMeta())
    assert out.status == "ok", out.error
    assert work_s <= out.row["slow_seconds"] < work_s + library_s  # mode=all: a child's start (0.1-0.2 s) is in it
    imported = module_s + library_s + (module_s if mode == "all" else 0.0)  # a child imports the module again
    assert imported <= out.row["slow_import_seconds"] < imported + 1.0
    loaded = results.load(tmp_path / "j").runs
    assert loaded["slow_import_seconds"].dtype == "float64"
    again = job.run_job(cfg, tmp_path / "j2", job.JobMeta())  # a cache hit, the modules already imported
    assert again.row["slow_cache"] == "hit" and again.row["slow_import_seconds"] < 0.1


def test_the_import_clock_counts_its_own_thread_once_and_leaves_no_hook(monkeypatch):
    import builtins
    import importlib
    import sys
    import threading

    from pipeline.run import imports

    monkeypatch.setenv("FAKE_LIBRARY_IMPORT_S", "0.3")
    monkeypatch.setenv("FAKE_MODULE_IMPORT_S", "0.3")
    for name in ("tests.fake_slow_import_stage", "tests.fake_heavy_library"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    hooks = builtins.__import__, importlib.import_module
    elsewhere = threading.Thread(target=importlib.import_module, args=("tests.fake_slow_import_stage",))
    with imports.clock() as outer:
        elsewhere.start()  # another thread's import is not this stage's
        with imports.clock() as inner:
            import tests.fake_heavy_library  # noqa: F401 - its 0.3 s, once for each open clock
        elsewhere.join()
    assert 0.3 <= inner.seconds < 0.45 and 0.3 <= outer.seconds < 0.45
    assert (builtins.__import__, importlib.import_module) == hooks  # put back as they were
