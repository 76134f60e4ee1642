"""Whether the torch benchmark captures a CUDA graph, decided before any capture (stages/torch_backend/opened.py
graph_decision), as a table of cases with a fake probe; and the columns every benchmark row carries."""
from __future__ import annotations

import pytest

from stages.torch_backend import opened

SYNCS = "not captured: the callable synchronises with the host (torch's sync debug mode: called a synchronizing op)"


class Probe:
    """The probe call (TorchWorkload.host_sync): what it answers, and whether it was asked."""

    def __init__(self, answer: str | None):
        self.answer, self.calls = answer, 0

    def __call__(self):
        self.calls += 1
        return self.answer


# requested, build path, quantization, probe's answer -> captured, reason (a fragment), probe asked
CASES = [
    (False, "compile", "none", None, False, "benchmark.cuda_graph=false", False),
    (False, "eager", "torchao:int8_dynamic", SYNCS, False, "benchmark.cuda_graph=false", False),
    (True, "eager", "torchao:int8_dynamic", None, False, "pytorch/ao#4872", False),  # known unsafe: never probed
    (True, "eager", "torchao:fp8_dynamic_rowwise", None, False, "eager torchao:fp8_dynamic_rowwise", False),
    (True, "eager", "none", None, True, "did not synchronise", True),
    (True, "eager", "none", SYNCS, False, "synchronises with the host", True),
    (True, "compile", "torchao:int8_dynamic", None, True, "captured", True),  # compiled: the probe decides
    (True, "compile", "torchao:int8_dynamic", SYNCS, False, "sync debug mode", True),
    (True, "aoti", "none", None, True, "captured", True),
    (True, "aoti", "torchao:fp8_dynamic_rowwise", SYNCS, False, "synchronises", True),
]


@pytest.mark.parametrize("requested, path, quantization, answer, captured, reason, probed", CASES)
def test_graph_decision_table(requested, path, quantization, answer, captured, reason, probed):
    probe = Probe(answer)
    got, why = opened.graph_decision(requested, path, quantization, probe)
    assert got is captured and reason in why
    assert probe.calls == int(probed)


def test_a_probe_that_fails_otherwise_is_not_taken_for_a_sync():
    def broken():
        raise ValueError("shape mismatch")

    with pytest.raises(ValueError, match="shape mismatch"):
        opened.graph_decision(True, "compile", "none", broken)


def test_the_default_runtime_says_why_too():
    from stages import runtime

    assert runtime.Runtime().cuda_graph(True, []) == (True, "benchmark.cuda_graph=true")
    assert runtime.Runtime().cuda_graph(False, []) == (False, "benchmark.cuda_graph=false")


def test_a_cpu_benchmark_row_says_no_graph_and_why(tmp_path):
    """The shared benchmark stage on the host: benchmark_cuda_graph false, its reason `host-timed`."""
    from stages import benchmark, runtime

    class Host(runtime.Runtime):
        def specs(self, feeds):
            return []

        def call(self, feeds):
            return lambda: None

    result = benchmark._on_host(Host(), {}, {"warmup_ms": 0.0, "duration_s": 0.0, "min_iterations": 3,
                                            "trials": 1, "feeds": {"batch_size": 1}})
    assert result.info["cuda_graph"] is False and result.info["cuda_graph_reason"].startswith("host-timed")


# ------------------------------------------------------------------------------------------------ scoped settings


def test_timing_fails_on_a_recompile_and_restores_dynamo_after():
    """The timed loop runs under error_on_recompile: a callable whose guards fail (another shape than the one built)
    raises instead of silently timing a second graph; outside the block dynamo recompiles as before."""
    torch = pytest.importorskip("torch")
    torch._dynamo.reset()
    fn = torch.compile(lambda x: x * 2 + 1, backend="eager", dynamic=False)
    with torch.inference_mode():
        fn(torch.ones(2))
    with opened.no_recompile():
        assert torch.is_inference_mode_enabled()
        fn(torch.ones(2))  # the same guards: no recompile, no error
        with pytest.raises(torch._dynamo.exc.RecompileError):
            fn(torch.ones(3))
    assert torch._dynamo.config.error_on_recompile is False
    with torch.inference_mode():
        fn(torch.ones(4))  # outside: an ordinary recompile
    torch._dynamo.reset()


def test_scoped_math_mode_and_inductor_settings_are_restored():
    torch = pytest.importorskip("torch")
    from stages.torch_backend import precision

    torch.set_float32_matmul_precision("high")
    before = torch._inductor.config.get_config_copy()
    try:
        with precision.scoped("fp32", {"max_autotune": True, "coordinate_descent_tuning": True}):
            assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
            assert torch._inductor.config.max_autotune and torch._inductor.config.coordinate_descent_tuning
        assert torch.get_float32_matmul_precision() == "high" and torch._inductor.config.get_config_copy() == before
        with pytest.raises(KeyError), precision.scoped("tf32", {}):
            raise KeyError("the build failed")
        assert torch.get_float32_matmul_precision() == "high"
    finally:
        torch.set_float32_matmul_precision("highest")


@pytest.mark.parametrize("decided, note, graph, reason", [
    ((True, "captured: probe clean"), None, True, "captured: probe clean"),
    ((True, "captured: probe clean"), "CUDA graph capture failed, plain enqueue used: X", False,
     "CUDA graph capture failed, plain enqueue used: X"),          # decided yes, the capture itself failed
    ((False, "not captured: eager torchao:int8_dynamic"), None, False, "not captured: eager torchao:int8_dynamic"),
])
def test_a_gpu_benchmark_row_says_why_the_graph_was_or_was_not_used(monkeypatch, decided, note, graph, reason):
    """The shared benchmark on a GPU, with the harness and the GPU session faked: the runtime's up-front decision is
    what the harness is asked for, and the row's reason is that decision or the harness's failed capture."""
    import contextlib

    from stages import benchmark, runtime
    from stages.gpu import harness, session

    asked = {}

    def run(lanes, settings, hooks=()):
        asked["cuda_graph"] = settings.cuda_graph
        times = {"gpu_compute": [1.0] * 4, "enqueue": [0.1] * 4, "latency": [1.0] * 4}
        return harness.Measurement([harness.Trial(times, 4.0)], 1, settings.cuda_graph and note is None, note, 1,
                                   "spin", False)

    class Monitor:
        rows: list = []

        def summary(self):
            return {}

    class Gpu(runtime.Runtime):
        device = "cuda"

        def lanes(self, specs, sizes, seed, streams):
            return [object()]

        def cuda_graph(self, requested, lanes):
            return decided

    monkeypatch.setattr(harness, "run", run)
    monkeypatch.setattr(session, "exclusive", lambda watch=False: contextlib.nullcontext(Monitor()))
    params = {"warmup_ms": 0.0, "duration_s": 0.0, "min_iterations": 1, "trials": 1, "cuda_graph": True,
              "sync": "spin", "data_transfers": False, "streams": 1, "feeds": {"batch_size": 1}}
    result = benchmark._on_gpu(Gpu(), [], {}, 0, params)
    assert asked["cuda_graph"] is decided[0]
    assert result.info["cuda_graph"] is graph and result.info["cuda_graph_reason"] == reason
