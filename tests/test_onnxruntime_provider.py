"""backend.provider: ONNX Runtime's execution provider as an option of the onnxruntime backend.

Declared once (the plugin's OPTIONS, the YAML's value) and handed to the build by the runner; `cpu` is implied for
configs from before it, so their config_hash and cache keys hold. A provider this machine lacks is `unsupported` with
how to get it, decided on what the session really got: onnxruntime-gpu lists the CUDA provider on a machine without a
GPU and then runs on the CPU. The GPU path (IOBinding on the harness's stream, use_tf32 from the precision) runs only
in tests/gpu/test_onnxruntime_gpu.py, which skips where there is no CUDA GPU.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest

from pipeline.config.schema import ConfigError
from pipeline.run import job, plugins, runner
from stages import api, runtime
from stages.api import Unsupported
from stages.onnxruntime import build, opened, providers, session
from stages.onnxruntime.workload import OrtWorkload

BUILD = {"precision": "fp32", "tf32": False, "optimization_level": 3, "intra_op_threads": 1, "inter_op_threads": 1,
         "execution_mode": "sequential", "provider": "cpu"}


def tiny_model(path: Path, channels: int = 3, size: int = 16) -> Path:
    """Conv -> Relu -> GlobalAveragePool -> Flatten -> Gemm, dynamic batch."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal(s).astype(np.float32), n)
             for n, s in (("w", (32, channels, 3, 3)), ("b", (32,)), ("fc", (32, 5)), ("fc_b", (5,)))]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]), helper.make_node("GlobalAveragePool", ["r"], ["p"]),
             helper.make_node("Flatten", ["p"], ["f"]), helper.make_node("Gemm", ["f", "fc", "fc_b"], ["y"])]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                            ["N", channels, size, size])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), path)
    return path


@pytest.fixture(scope="module")
def cpu_build(tmp_path_factory):
    root = tmp_path_factory.mktemp("ort_provider")
    src = tiny_model(root / "tiny.onnx")
    (root / "build").mkdir()
    result = build.run({"onnx": src}, BUILD, root / "build")
    return root / "build" / result.outputs["model"], src, result


def no_gpu(monkeypatch):
    monkeypatch.setattr("stages.availability.gpu_count", lambda: 0)


def a_gpu_that_cannot_be_used(monkeypatch):
    """NVML sees a GPU and the package lists the provider: what onnxruntime-gpu says on a machine whose CUDA or
    TensorRT libraries are missing. Only the session can tell."""
    import onnxruntime as ort

    monkeypatch.setattr("stages.availability.gpu_count", lambda: 1)
    monkeypatch.setattr(ort, "get_available_providers", lambda: list(providers.NAMES.values()))
    monkeypatch.setattr(ort, "preload_dlls", lambda *a, **k: None, raising=False)


class FakeSession:
    def __init__(self, got):
        self.got = got

    def get_providers(self):
        return self.got


# ---------------------------------------------------------------- the option: declared once, handed over, hashed


def test_the_option_is_declared_by_the_plugin_valued_in_the_yaml_and_handed_to_the_build(base_config):
    backend = copy.deepcopy(base_config["backend"])
    assert backend["provider"] == "cpu"
    assert plugins.plugin(backend).OPTIONS["provider"].choices == ("cpu", "cuda", "tensorrt")
    built = {n.name: n for n in runner.plan(backend["dag"], backend)}["build"]
    assert built.params["provider"] == "cpu"
    backend["provider"] = "cuda"
    assert {n.name: n for n in runner.plan(backend["dag"], backend)}["build"].params["provider"] == "cuda"


def test_a_config_from_before_the_option_is_handed_the_cpu_provider(base_config):
    backend = copy.deepcopy(base_config["backend"])
    del backend["provider"]
    plugins.check(backend)  # no "missing" for an option with an implied value
    assert {n.name: n for n in runner.plan(backend["dag"], backend)}["build"].params["provider"] == "cpu"


def test_a_bad_provider_is_one_line_naming_the_key_the_value_and_the_valid_ones(base_config):
    backend = {**copy.deepcopy(base_config["backend"]), "provider": "rocm"}
    with pytest.raises(ConfigError) as err:
        plugins.check(backend)
    assert str(err.value) == "backend.provider = 'rocm': valid: cpu, cuda, tensorrt"
    with pytest.raises(ConfigError, match=r"^backend\.provider = None: must be set$"):
        plugins.check({**backend, "provider": None})  # implied when left out, not when set to nothing


def test_cpu_keeps_the_hash_of_a_config_from_before_the_option_and_a_gpu_provider_changes_it(base_config):
    today = copy.deepcopy(base_config)
    before = copy.deepcopy(base_config)
    del before["backend"]["provider"]
    assert job.config_hash(today) == job.config_hash(before)
    cuda = copy.deepcopy(base_config)
    cuda["backend"]["provider"] = "cuda"
    assert job.config_hash(cuda) != job.config_hash(today)


def test_the_builds_cache_key_leaves_out_cpu_and_keeps_a_gpu_provider():
    declared = api.declared(build, plugins.plugin({"plugin": "stages.onnxruntime"}).OPTIONS)
    assert "provider" not in api.keyed(declared, BUILD)
    assert api.keyed(declared, {**BUILD, "provider": "cuda"})["provider"] == "cuda"
    assert build.environment(BUILD)["provider"] == "CPUExecutionProvider"


# ---------------------------------------------------------------- what each provider refuses, what its sessions get


def test_tf32_is_refused_on_the_cpu_with_the_reason_and_mapped_to_use_tf32_on_cuda():
    assert "TF32 is a tensor-core math mode" in providers.refusal("cpu", "tf32", True)
    assert all(providers.refusal("cuda", p, p == "tf32") is None for p in ("fp32", "tf32", "fp16", "bf16", "int8"))
    assert "cannot compute in plain fp32" in providers.refusal("tensorrt", "fp32", False)
    assert "no switch that lets TensorRT use fp8" in providers.refusal("tensorrt", "fp8", False)
    assert all(providers.refusal("tensorrt", p, p == "tf32") is None for p in ("tf32", "fp16", "bf16", "int8"))


def test_the_provider_options_a_session_gets():
    assert providers.session_providers("cpu", "fp32", False) == ["CPUExecutionProvider"]
    assert providers.session_providers("cuda", "fp32", False, stream=140123) == [
        ("CUDAExecutionProvider", {"device_id": "0", "use_tf32": "0", "user_compute_stream": "140123"})]
    assert providers.session_providers("cuda", "tf32", True) == [("CUDAExecutionProvider",
                                                                  {"device_id": "0", "use_tf32": "1"})]
    assert providers.session_providers("tensorrt", "tf32", True, stream=7) == [
        ("TensorrtExecutionProvider", {"device_id": "0", "user_compute_stream": "7"})]
    assert providers.provider_options("tensorrt", "fp16", False) == {"device_id": "0", "trt_fp16_enable": "True"}


@pytest.mark.parametrize("library, keys", [
    ("libonnxruntime_providers_cuda.so", (b"use_tf32\0", b"has_user_compute_stream\0", b"device_id\0")),
    ("onnxruntime_pybind11_state", (b"user_compute_stream\0", b"disable_synchronize_execution_providers\0",
                                    *(f"'{k}' should be 'True' or 'False'".encode()
                                      for k in providers.TRT_PRECISION.values()))),
    ("libonnxruntime_providers_tensorrt.so", tuple(f"{k}\0".encode() for k in providers.TRT_PRECISION.values()))])
def test_the_option_names_are_ones_the_installed_onnxruntime_knows(library, keys):
    """Against onnxruntime's own binaries, where onnxruntime-gpu is installed: the CUDA provider parses use_tf32
    (ORT's default is on) and has_user_compute_stream; the Python binding takes user_compute_stream (as an integer
    string, for the CUDA and TensorRT providers), the run option that stops a run synchronising, and the TensorRT
    provider's precision switches as 'True'/'False', which the provider itself declares."""
    import onnxruntime as ort

    found = sorted((Path(ort.__file__).parent / "capi").glob(f"{library}*"))
    if not found:
        pytest.skip(f"{library} is not installed here (the CPU-only onnxruntime package)")
    data = found[0].read_bytes()
    assert all(key in data for key in keys)


# ---------------------------------------------------------------- a provider this machine lacks: unsupported


def test_a_machine_without_a_gpu_gets_unsupported_with_how_to_get_it(monkeypatch):
    no_gpu(monkeypatch)
    for provider in providers.GPU:
        with pytest.raises(Unsupported) as err:
            providers.check_here(provider)
        assert f"backend.provider={provider}" in str(err.value) and providers.HOW_TO_GET[provider] in str(err.value)
    providers.check_here("cpu")  # the CPU provider needs nothing more


def test_an_onnxruntime_without_the_provider_says_which_package_has_it(monkeypatch):
    import onnxruntime as ort

    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    with pytest.raises(Unsupported, match=r"has no CUDAExecutionProvider\. .*pip install onnxruntime-gpu"):
        providers.check_here("cuda")


def test_a_session_that_fell_back_to_the_cpu_is_unsupported_never_measured_as_cuda():
    with pytest.raises(Unsupported, match=r"could not start CUDAExecutionProvider and fell back to "
                                          r"CPUExecutionProvider\b.*pip install onnxruntime-gpu"):
        providers.check_got(FakeSession(["CPUExecutionProvider"]), "cuda")
    providers.check_got(FakeSession(["CUDAExecutionProvider", "CPUExecutionProvider"]), "cuda")


def test_the_build_refuses_a_session_that_silently_fell_back(tmp_path, monkeypatch):
    """The real onnxruntime, asked for the CUDA provider where it cannot start it, runs on the CPU and says so only in
    its log: the build sees it in get_providers() and refuses."""
    from stages import availability

    if availability.gpu_count():
        pytest.skip("a real GPU is here: onnxruntime may well start its CUDA provider")
    a_gpu_that_cannot_be_used(monkeypatch)
    src = tiny_model(tmp_path / "tiny.onnx")
    (tmp_path / "out").mkdir()
    with pytest.raises(Unsupported, match=r"fell back to CPUExecutionProvider"):
        build.run({"onnx": src}, {**BUILD, "provider": "cuda"}, tmp_path / "out")
    assert not (tmp_path / "out" / session.SETTINGS_FILE).exists()  # nothing that reads as a cuda build


def test_the_build_refuses_tf32_on_the_cpu_before_anything_else(tmp_path):
    with pytest.raises(Unsupported, match="TF32 is a tensor-core math mode"):
        build.run({"onnx": tmp_path / "never_read.onnx"}, {**BUILD, "precision": "tf32", "tf32": True}, tmp_path)


def test_a_job_on_a_gpu_provider_without_a_gpu_is_an_unsupported_row_before_any_stage(base_config, tmp_path,
                                                                                     monkeypatch):
    no_gpu(monkeypatch)
    cfg = copy.deepcopy(base_config)
    cfg["cache"]["dir"] = str(tmp_path / "cache")
    cfg["backend"]["provider"] = "tensorrt"
    out = job.run_job(cfg, tmp_path / "job", job.JobMeta())
    assert out.status == "unsupported", out.error
    assert "backend.provider=tensorrt needs an NVIDIA GPU; none found (NVML)" in out.error
    assert "pip install onnxruntime-gpu" in out.error and "TensorRT's libraries" in out.error
    assert out.row["provider"] == "tensorrt"
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").rglob("*.onnx"))  # nothing exported
    cfg["backend"]["provider"] = "cpu"
    plugins.check(cfg["backend"])  # the CPU provider needs no GPU


def test_a_cuda_build_served_to_a_machine_without_a_gpu_is_not_run_on_the_cpu(cpu_build, tmp_path, monkeypatch):
    """A cached artifact built on a GPU machine (a shared cache) opened here: unsupported, never host-timed."""
    model, src, _ = cpu_build
    moved = tmp_path / "build"
    moved.mkdir()
    (moved / model.name).write_bytes(model.read_bytes())
    settings = json.loads((model.parent / session.SETTINGS_FILE).read_text())
    (moved / session.SETTINGS_FILE).write_text(json.dumps({**settings, "provider": "cuda"}))
    no_gpu(monkeypatch)
    with pytest.raises(Unsupported, match="backend.provider=cuda"):
        runtime.open_build("stages.onnxruntime", {"model": moved / model.name, "reference": src}, {}, tmp_path)


# ---------------------------------------------------------------- the cpu provider as before


def test_a_cpu_build_records_its_provider_and_opens_host_timed(cpu_build, tmp_path):
    model, src, result = cpu_build
    assert session.built_settings(model)["provider"] == "cpu"
    assert result.info["session_providers"] == "CPUExecutionProvider"
    rt = runtime.open_build("stages.onnxruntime", {"model": model, "reference": src}, {}, tmp_path)
    try:
        assert type(rt) is opened.OnnxRuntime and rt.device == "cpu" and not rt.on_gpu
    finally:
        rt.close()


def test_a_build_from_before_the_option_opens_on_the_cpu(cpu_build, tmp_path):
    model, src, _ = cpu_build
    old = tmp_path / "old"
    old.mkdir()
    (old / model.name).write_bytes(model.read_bytes())
    settings = json.loads((model.parent / session.SETTINGS_FILE).read_text())
    (old / session.SETTINGS_FILE).write_text(json.dumps({k: v for k, v in settings.items()
                                                         if k not in ("provider", "tf32")}))
    assert session.built_settings(old / model.name)["provider"] == "cpu"
    rt = opened.open_build(old / model.name, src)
    try:
        assert rt.device == "cpu"
    finally:
        rt.close()


# ---------------------------------------------------------------- the harness workload, its bindings on the CPU


def test_the_workload_binds_its_buffers_once_and_runs_into_them(cpu_build):
    """The GPU workload's IOBinding calls, on the CPU provider: the first enqueue opens the session on that stream,
    later runs write into the same bound outputs, and another stream is refused (a session keeps its stream)."""
    model, _, _ = cpu_build
    x = np.random.default_rng(1).standard_normal((4, 3, 16, 16)).astype(np.float32)
    opened_on = []

    def open_session(stream):
        opened_on.append(stream)
        return session.open_built(model)

    w = OrtWorkload({"x": x}, open_session, device="cpu")
    w.enqueue(1234)
    (inp,), (out,) = w.buffers()
    w.enqueue(1234)
    assert opened_on == [1234] and w.buffers() == ([inp], [out])
    assert inp.nbytes == x.nbytes and out.nbytes == 4 * 5 * 4 and w.io_bytes() == x.nbytes + 80
    expected = session.open_built(model).run(None, {"x": x})[0]
    np.testing.assert_allclose(w.outputs[0].numpy(), expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(RuntimeError, match="the stream its session was opened with"):
        w.enqueue(99)
    w.close()
