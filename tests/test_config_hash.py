"""One notion of "never changes a result": config_hash is the same whatever the cache, output or isolation settings,
for every backend, and a setting that does change results changes it."""
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from pipeline import results
from pipeline.config import paths, schema
from pipeline.run import job
from tests.conftest import FAST, run_cli

BACKENDS = ["onnxruntime", "torch", "tensorrt", "trtexec"]
NEUTRAL = ["cache.dir=/elsewhere/cache", "cache.verify=full", "isolation.mode=all", "isolation.timeout_s=5",
           "select.max_accuracy_drop=0.5",
           "resume=true", "report.enabled=false"]


def config(*overrides):
    schema.register()  # the `schema` node conf/config.yaml builds on
    with initialize_config_dir(config_dir=paths.CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="config", overrides=list(overrides))
    return OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)


@pytest.mark.parametrize("backend", BACKENDS)
def test_settings_that_change_no_result_leave_the_hash(backend):
    base = job.config_hash(config(f"backend={backend}"))
    assert job.config_hash(config(f"backend={backend}", *NEUTRAL)) == base
    assert job.config_hash(config(f"backend={backend}", "precision=fp16")) != base
    assert job.config_hash(config(f"backend={backend}", "batch_size=4")) != base


def test_where_trtexec_is_changes_no_result_but_its_flags_do():
    base = job.config_hash(config("backend=trtexec"))
    assert job.config_hash(config("backend=trtexec", "backend.path=/opt/trt/bin/trtexec")) == base
    assert job.config_hash(config("backend=trtexec", "backend.extra_args=['--useDLACore=0']")) != base


@pytest.mark.slow
def test_an_unsupported_tensorrt_row_carries_the_same_hash_from_two_caches(workdir):
    for cache in ("c1", "c2"):
        proc = run_cli(["backend=tensorrt", f"cache.dir={cache}", f"hydra.run.dir=run-{cache}", *FAST], workdir)
        assert proc.returncode == 3, proc.stdout[-2000:]  # nothing ran here, nothing failed
    rows = [results.load(workdir / f"run-{c}").runs.iloc[0] for c in ("c1", "c2")]
    assert [r.status for r in rows] == ["unsupported", "unsupported"]
    assert rows[0].config_hash == rows[1].config_hash
