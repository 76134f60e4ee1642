"""The torch backend's build as an artifact on CPU: an AOTInductor package (stages/torch_backend/build.py) compiled
by the system compiler, served from the cache on a re-run, checked against eager, loaded by benchmark and validate;
the fallback to the in-process path with its reason (the process's math mode and Inductor settings untouched).

One package is compiled for the whole module (tiny_cnn, about 20 s on two cores); the second run is a cache hit.
"""
from __future__ import annotations

import json

import pytest

from pipeline import results
from stages.torch_backend import build as build_stage
from stages.torch_backend import compiled, package
from tests import fake_crash_backend
from tests.conftest import FAST, run_cli
from tests.test_torch_lowp import compose

torch = pytest.importorskip("torch")

AOTI = ["backend=torch", "model=tiny_cnn", "backend.device=cpu", "backend.compile=default", "profile.enabled=false",
        *FAST]


@pytest.fixture(scope="module")
def twice(tmp_path_factory):
    """The same point run twice in one directory (one artifact cache): its runs and the directory."""
    workdir = tmp_path_factory.mktemp("aoti")
    for _ in range(2):
        proc = run_cli(AOTI, workdir, timeout=600)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    loaded = results.load(workdir / "outputs")
    return loaded.runs.sort_values("started").reset_index(drop=True), loaded.summary, workdir


@pytest.mark.slow
def test_the_build_is_a_package_and_the_rerun_serves_it(twice):
    runs, _, _ = twice
    assert list(runs["status"]) == ["ok", "ok"]
    assert list(runs["build_cache"]) == ["miss", "hit"]           # the second run compiled nothing
    assert list(runs["build_path"]) == ["aoti", "aoti"] and list(runs["compile_path"]) == ["aoti", "aoti"]
    assert runs.loc[0, "build_aoti_compile_s"] > 0
    assert (runs["build_package_rel_l2_err"] < 1e-4).all()        # checked against eager before publishing
    assert (runs["validate_rel_l2_err"] < 1e-4).all()             # the package, loaded, against fp32 eager on CPU
    assert list(runs["benchmark_cuda_graph"]) == [False, False]
    assert set(runs["benchmark_cuda_graph_reason"]) == {"host-timed: no CUDA graph on the CPU"}


@pytest.mark.slow
def test_the_package_is_the_reported_artifact_and_matches_eager(twice):
    _, summary, workdir = twice
    [handle] = (workdir / "outputs" / "cache").rglob(package.FILE)
    meta = package.read(handle)
    size = (handle.parent / package.PACKAGE).stat().st_size
    rows = summary.query("metric == 'artifact' and stat == 'package'")
    assert len(rows) == 2 and abs(rows["value"].iloc[0] - size / 2**20) < 1e-6
    # opened as the measuring stages open it: the package, and the fp32 model from the weights for reference
    [weights] = (workdir / "outputs" / "cache").rglob("weights.pt")
    c = compiled.open_package({"path": "aoti", "build": str(handle), "weights": str(weights)})
    assert c.build_path == "aoti" and not isinstance(c.fn, torch.nn.Module) and meta["device"] == "cpu"
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        torch.testing.assert_close(c.fn(x), c.reference(x), rtol=1e-4, atol=1e-5)


def branchy():
    """A model torch.export cannot take: control flow on a tensor's value."""
    class Branchy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(4, 3)

        def forward(self, x):
            if x.sum() > 0:
                return self.fc(x)
            return -self.fc(x)

    return Branchy()


def nodes_of(*overrides):
    from pipeline.run import runner

    config = compose(*overrides)
    return {n.name: n for n in runner.plan(config["backend"]["dag"], config["backend"])}


def test_a_model_export_cannot_take_falls_back_to_compile_with_the_reason(tmp_path):
    from stages.torch_backend import model

    nodes = nodes_of("backend=torch", "model=factory", "model._target_=tests.test_torch_aoti.branchy",
                     "model.input_shape=[4]", "backend.device=cpu", "backend.compile=default")
    (tmp_path / "m").mkdir()
    (tmp_path / "b").mkdir()
    model.run({}, nodes["model"].params, tmp_path / "m")
    before = torch.get_float32_matmul_precision(), torch._inductor.config.get_config_copy()
    torch.set_float32_matmul_precision("high")  # a process in TF32 mode: the fp32 build must not change it
    try:
        result = build_stage.run({"weights": tmp_path / "m" / model.WEIGHTS},
                                 {**nodes["build"].params, "mode": "max-autotune"}, tmp_path / "b")
        # the build ran in fp32 with max-autotune's settings, and left the process's settings as they were
        assert torch.get_float32_matmul_precision() == "high"
        assert torch._inductor.config.get_config_copy() == before[1] and not torch._inductor.config.max_autotune
    finally:
        torch.set_float32_matmul_precision(before[0])
    assert result.info["path"] == "compile"
    assert result.info["reason"].startswith("torch.export failed: ")
    assert not (tmp_path / "b" / package.PACKAGE).exists()
    meta = package.read(tmp_path / "b" / package.FILE)
    assert meta["path"] == "compile" and "package" not in meta


@pytest.mark.parametrize("overrides, path", [(("backend.compile=eager",), "eager"),
                                             (("backend.compile=default", "backend.build=compile"), "compile")])
def test_eager_and_build_compile_make_no_package(tmp_path, overrides, path):
    nodes = nodes_of("backend=torch", "model=tiny_cnn", "backend.device=cpu", *overrides)
    result = build_stage.run({"weights": tmp_path / "unused"}, nodes["build"].params, tmp_path)
    assert result.info["path"] == path and result.info["reason"]
    assert nodes["compile"].inputs["build"] == ("build", "build")


def test_the_key_holds_what_changes_the_package():
    nodes = nodes_of("backend=torch", "model=tiny_cnn", "backend.device=cpu", "backend.compile=default")
    params = nodes["build"].params
    env = build_stage.environment(params)
    assert env["device"] == "cpu" and "isa" in env and env["torch"]
    extra = build_stage.key_extra(params)
    assert extra == {"recipe": None, "inductor": {}, "shapes": "dynamic"}
    autotune = build_stage.key_extra({**params, "mode": "max-autotune"})
    assert autotune["inductor"] == {"max_autotune": True}
    assert json.dumps(params["model"]) and params["build"] == "aoti"


def test_a_build_that_crashes_its_process_falls_back_with_the_signal_and_where(tmp_path, monkeypatch):
    """On CUDA the build runs in a child (an AOTInductor build once segfaulted a whole sweep on the H200): a crash
    there is the point's fallback to the in-process path, its reason naming the signal and the frame it died in."""
    nodes = nodes_of("backend=torch", "model=tiny_cnn", "backend.device=cpu", "backend.compile=default")
    monkeypatch.setattr(build_stage, "in_child", lambda device: True)  # as on CUDA
    monkeypatch.setattr(build_stage, "_build_scoped", fake_crash_backend.segfault_build)
    result = build_stage.run({"weights": tmp_path / "unused"}, nodes["build"].params, tmp_path)
    assert result.info["path"] == "compile"
    assert "crashed with signal SIGSEGV (11), in segfault_build (fake_crash_backend.py:" in result.info["reason"]
    assert package.read(tmp_path / package.FILE)["path"] == "compile"
    assert "Segmentation fault" in (tmp_path / build_stage.CRASH_LOG).read_text()


def test_the_build_child_hands_its_result_back_and_leaves_no_crash_log(tmp_path, monkeypatch):
    import os

    nodes = nodes_of("backend=torch", "model=tiny_cnn", "backend.device=cpu", "backend.compile=default")
    monkeypatch.setattr(build_stage, "in_child", lambda device: True)
    monkeypatch.setattr(build_stage, "_build_scoped", fake_crash_backend.fine_build)
    result = build_stage.run({"weights": tmp_path / "unused"}, nodes["build"].params, tmp_path)
    pid = int(result.info["reason"].rpartition(" ")[2])
    assert pid != os.getpid() and result.outputs == {"build": package.FILE}
    assert not (tmp_path / build_stage.CRASH_LOG).exists()
