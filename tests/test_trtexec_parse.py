"""trtexec's log and JSON exports parsed, and trtexec command lines built, on a CPU.

The fixtures in tests/data/trtexec/ are hand-written in the formats documented by NVIDIA/TensorRT's
samples/common (10.16 and 11.1); see the README there. Flag sets below come from sampleOptions.cpp of the same tags.
"""
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from stages import timing_stats
from stages.api import Unsupported
from stages.tensorrt.build import BuildPlan
from stages.trtexec import backend, parse

DATA = Path(__file__).parent / "data" / "trtexec"


def log(name):
    return parse.parse_log((DATA / name).read_text())


# ------------------------------------------------------------------------------------------- the log

def test_10x_log():
    got = log("trt10_build_and_run.log")
    assert (got.version, got.major, got.result) == ("10.16.0", 10, "PASSED")
    assert got.command.startswith("trtexec --onnx=tiny_cnn.onnx --saveEngine=tiny_cnn.engine")
    assert got.throughput_qps == 10520.4 and got.host_walltime_s == 3.00006 and got.gpu_compute_total_s == 1.58747
    assert (got.warmup_queries, got.warmup_ms, got.timed_queries) == (2104, 200.0, 31562)
    assert got.summary["gpu_compute"] == {"min": 0.0458984, "max": 0.321533, "mean": 0.0502968, "median": 0.0491943,
                                          "p90": 0.0531006, "p95": 0.0552979, "p99": 0.0762939}
    assert set(got.summary) == {"latency", "enqueue", "h2d", "gpu_compute", "d2h"}
    assert got.summary["d2h"]["min"] == pytest.approx(8.1e-05)  # scientific notation
    assert got.warnings == ["GPU compute time is unstable, with coefficient of variance = 4.07812%."]
    assert got.unstable_cov_pct == 4.07812 and got.verdicts == [timing_stats.UNSTABLE]
    assert got.started.isoformat() == "2026-11-20T17:42:10" and got.ended.isoformat() == "2026-11-20T17:42:37"


def test_10x_settings():
    assert parse.settings(log("trt10_build_and_run.log")) == {
        "optimization_level": 3, "max_aux_streams": 0, "precision_flags": "Strongly Typed", "workspace_mb": 1024.0,
        "timing_cache_file": "timing.cache", "min_iterations": 10, "duration_s": 3.0, "warmup_ms": 200.0,
        "streams": 1, "cuda_graph": False, "data_transfers": True, "sync": "spin", "tf32": False, "batch_size": 8,
        "gpu": "NVIDIA L4", "compute_capability": "8.9", "tensorrt": "10.16.0"}


def test_11x_log_of_a_loaded_engine():
    got = log("trt11_run.log")
    assert (got.version, got.result) == ("11.1.0", "PASSED")
    assert got.host_walltime_s == pytest.approx(6.592e-05) and got.gpu_compute_total_s == pytest.approx(4.9376e-05)
    assert set(got.summary["latency"]) == {"min", "max", "mean", "median", "p90", "p95", "p99", "p99.9"}
    assert got.summary["h2d"] == dict.fromkeys(got.summary["h2d"], 0.0)  # data transfers off
    assert got.warnings == [] and got.verdicts == [] and got.unstable_cov_pct is None
    known = parse.settings(got)
    assert (known["optimization_level"], known["max_aux_streams"], known["tf32"]) == (None, None, None)  # no build
    assert (known["cuda_graph"], known["data_transfers"], known["sync"]) == (True, False, "spin")
    assert (known["batch_size"], known["gpu"], known["compute_capability"]) == (8, "NVIDIA H100 80GB HBM3", "9.0")


def test_log_summary_agrees_with_its_exported_times():
    """The 11.x fixture's summary was printed from its times with trtexec's formulas: recomputing must agree
    to the 6 significant digits trtexec prints (checks the log parser and the times parser against each other)."""
    got, times = log("trt11_run.log"), parse.parse_times((DATA / "trt11_times.json").read_text())
    for metric in ("gpu_compute", "latency"):
        stats = timing_stats.describe(times[metric])
        values = np.sort(times[metric])
        for stat, printed in got.summary[metric].items():
            want = timing_stats.percentile(values, float(stat[1:])) if stat.startswith("p") else stats[stat]
            assert printed == pytest.approx(want, rel=1e-5), (metric, stat)
    assert len(times["latency"]) == got.timed_queries == 12


def test_failed_and_truncated_logs_have_no_measurement():
    failed = log("trt10_failed.log")
    assert failed.result == "FAILED" and failed.summary == {} and failed.version == "10.16.0"
    with pytest.raises(backend.NoMeasurement, match="FAILED"):
        backend.ingest((DATA / "trt10_failed.log").read_text())
    text = (DATA / "trt11_run.log").read_text()
    cut = text[:text.index("=== Performance summary ===")]
    assert parse.parse_log(cut).result is None
    with pytest.raises(backend.NoMeasurement, match="stops before"):
        backend.ingest(cut)


def test_missing_sections_and_no_prefixes():
    """A log reduced to its summary, without timestamps (e.g. copied from a terminal): what is there is read."""
    text = "\n".join(line.split("] ", 2)[-1] for line in (DATA / "trt10_build_and_run.log").read_text().splitlines()
                     if "Performance summary" in line or "Latency:" in line or "Throughput:" in line
                     or "GPU Compute Time:" in line or "coefficient" in line)
    got = parse.parse_log(text)
    assert got.summary["gpu_compute"]["median"] == 0.0491943 and got.throughput_qps == 10520.4
    assert got.unstable_cov_pct == 4.07812 and got.version is None and got.started is None
    assert all(v is None for k, v in parse.settings(got).items())


@pytest.mark.parametrize("text, value", [("12.5", 12.5), ("1.23457e+06", 1.23457e6), ("9.53674e-07", 9.53674e-7),
                                         ("1E-5", 1e-5), ("3", 3.0), ("-0.5", -0.5)])
def test_numbers_in_every_form_cpp_prints(text, value):
    got = parse.parse_log(f"=== Performance summary ===\nThroughput: {text} qps\n"
                          f"GPU Compute Time: min = {text} ms, max = {text} ms, mean = {text} ms, median = {text} ms, "
                          f"percentile(90%) = {text} ms\nTotal Host Walltime: {text} s\n")
    assert got.throughput_qps == value and got.host_walltime_s == value
    assert got.summary["gpu_compute"] == {"min": value, "max": value, "mean": value, "median": value, "p90": value}


def test_inf_and_nan_are_read():
    got = parse.parse_log("=== Performance summary ===\nGPU Compute Time: min = 0 ms, max = inf ms, mean = nan ms, "
                          "median = 0 ms\n* GPU compute time is unstable, with coefficient of variance = inf%.\n")
    assert got.summary["gpu_compute"]["max"] == float("inf") and np.isnan(got.summary["gpu_compute"]["mean"])
    assert got.unstable_cov_pct == float("inf")


def test_every_trtexec_warning_becomes_a_verdict():
    text = "\n".join([
        "[W] * Throughput may be bound by Enqueue Time rather than GPU Compute and the GPU may be under-utilized.",
        "[W] * Throughput may be bound by device-to-host transfers for the outputs rather than GPU Compute and the "
        "GPU may be under-utilized.",
        "[W] * GPU compute time is unstable, with coefficient of variance = 2.6%.",
        "[W] * Multiple inference streams are used. Latencies may not be accurate since inferences may run in "
        "  parallel. Please use \"Throughput\" as the performance metric instead."])
    got = parse.parse_log(text.replace("[W] ", "[11/21/2026-10:00:00] [W] "))
    assert got.verdicts == ["unstable", "enqueue-bound", "transfer-bound", "latency-unreliable"]
    assert timing_stats.verdict_label(got.verdicts) == "enqueue-bound+latency-unreliable+transfer-bound+unstable"


@pytest.mark.parametrize("command, batch", [
    ("trtexec --loadEngine=e --shapes=input:8x3x32x32", 8), ("trtexec --onnx=m --optShapes=x:4x3,y:4x7", 4),
    ("trtexec --onnx=m --shapes='in:0':16x3", 16), ("trtexec --onnx=m", None), (None, None)])
def test_batch_from_the_command_line(command, batch):
    assert parse.batch_from_command(command) == batch


# ------------------------------------------------------------------------------------------- the exports

def test_exported_times():
    times = parse.parse_times((DATA / "trt11_times.json").read_text())
    assert list(times) == ["gpu_compute", "enqueue", "h2d", "d2h", "latency"]
    assert times["gpu_compute"][:3] == [0.004096, 0.004128, 0.004064] and times["latency"] == times["gpu_compute"]
    assert all(0 < e < 0.01 for e in times["enqueue"])  # endEnqMs - startEnqMs of 6-digit timestamps
    assert set(times["h2d"]) == set(times["d2h"]) == {0}


def test_exported_profile():
    prof = parse.parse_profile((DATA / "trt10_profile.json").read_text())
    assert prof.count == 2104 and len(prof.mean_ms) == 6
    assert prof.mean_ms["node_Conv_55 + node_relu"] == 0.0172729 and prof.mean_ms["node_Reshape_64"] == 0


def test_exported_profile_keeps_the_median():
    prof = parse.parse_profile((DATA / "trt11_profile.json").read_text())
    assert prof.median_ms["output_cast_to_fp32"] == 0.00016 and prof.mean_ms["output_cast_to_fp32"] == 0.000165333


def test_names_with_quotes_and_backslashes_parse():
    """trtexec writes names as they are; a name with a quote or backslash is not JSON until repaired."""
    name = 'Reformat "a\\b" to x\\'
    text = ('[\n  { "count" : 2 }\n'
            f', {{ "name" : "{name}", "timeMs" : 0.5, "averageMs" : 0.25, "medianMs" : 0.2, "percentage" : 100 }}\n'
            ', { "name" : "inf nan", "timeMs" : 0, "averageMs" : nan, "medianMs" : -nan, "percentage" : inf }\n]\n')
    with pytest.raises(ValueError):  # the name alone breaks it: with a plain name it is JSON once nan/inf are fixed
        json.loads(parse._bare_numbers(text))
    json.loads(parse._bare_numbers(text.replace(name, "x")))
    prof = parse.parse_profile(text)
    assert list(prof.mean_ms) == [name, "inf nan"]  # a name is kept as written, even one that reads like a number
    assert prof.mean_ms[name] == 0.25 and prof.median_ms == {name: 0.2, "inf nan": None}


def test_output_names_with_quotes_parse():
    text = '[\n  { "name" : "out"put\\"\n  , "dimensions" : "2"\n  , "values" : [ 1, 2 ]\n  }\n]\n'
    assert list(parse.parse_outputs(text)) == ['out"put\\']


def test_aux_stream_warning_is_read():
    warning = ('[11/21/2026-10:15:03] [W] The engine uses 2 auxiliary streams, so the "Total" latency may not be '
               'accurate because some layers may have run in parallel!\n')
    assert parse.parse_log(warning).aux_streams == 2 and log("trt11_run.log").aux_streams is None


def test_layers_that_overlap_are_flagged():
    text = (DATA / "trt11_run.log").read_text()
    profile, layers = (DATA / "trt11_profile.json").read_text(), (DATA / "trt11_layer_info.json").read_text()
    tables, info, _ = backend.ingest(text, profile_text=profile, layers_text=layers)
    assert info["layers_overlap"] is True and "do not add up" in info["layers_note"]  # a layer on stream 1
    single = layers.replace('"StreamId": 1', '"StreamId": 0')
    assert backend.ingest(text, profile_text=profile, layers_text=single)[1]["layers_overlap"] is False
    warned = text.replace("[I] Starting inference", "[W] The engine uses 1 auxiliary streams, so ...")
    assert backend.ingest(warned, profile_text=profile, layers_text=single)[1]["layers_overlap"] is True
    assert backend.ingest(text)[1]["layers_overlap"] is None  # no layers ingested: nothing to say
    medians = {r["layer"]: r["median_ms"] for r in tables["layers"]}
    assert medians["output_cast_to_fp32"] == 0.00016


def test_exports_with_bare_inf_and_nan():
    """trtexec prints a zero-time run's percentage as nan and writes it as is, which is not JSON."""
    prof = parse.parse_profile('[\n  { "count" : 0 }\n, { "name" : "a", "timeMs" : 0, "averageMs" : nan, '
                               '"medianMs" : -nan, "percentage" : inf }\n]\n')
    assert prof.count == 0 and prof.mean_ms == {"a": 0.0}


# ------------------------------------------------------------------------------------------- command lines

# Flags each major's sampleOptions.cpp parses (the ones this backend may pass): the 11.x toggles do not
# exist in 10.16, and 11.x only warns about the 10.x ones, so neither may appear in the other's command.
FLAGS = {"--onnx", "--saveEngine", "--skipInference", "--builderOptimizationLevel", "--maxAuxStreams",
         "--profilingVerbosity", "--memPoolSize", "--minShapes", "--optShapes", "--maxShapes", "--noTF32",
         "--timingCacheFile", "--loadEngine", "--warmUp", "--duration", "--iterations", "--infStreams",
         "--percentile", "--shapes", "--exportTimes", "--exportProfile", "--exportLayerInfo"}
KNOWN = {10: FLAGS | {"--stronglyTyped", "--useCudaGraph", "--noDataTransfers", "--useSpinWait",
                      "--separateProfileRun"},
         11: FLAGS | {"--noCudaGraph", "--includeDataTransfers", "--noSpinWait"}}
PLAN = BuildPlan(tf32=False, optimization_level=3, max_aux_streams=2, workspace_bytes=512 << 20,
                 shapes={"input": [[1, 3, 32, 32], [8, 3, 32, 32], [16, 3, 32, 32]],
                         "ids:0": [[1, 7], [8, 7], [16, 7]]})
BENCH = {"warmup_ms": 200.0, "duration_s": 3.0, "min_iterations": 10, "streams": 1, "cuda_graph": True,
         "sync": "spin", "data_transfers": False}
EXPORTS = {k: Path(f"/o/{f}") for k, f in backend.EXPORTS.items()}


def flags(cmd):
    return [a.split("=")[0] for a in cmd[1:]]


@pytest.mark.parametrize("major", [10, 11])
def test_build_command(major):
    cmd = backend.build_command("/opt/trtexec", Path("m.onnx"), Path("out/m.engine"), PLAN, major=major,
                                timing_cache=Path("tc/timing.cache"), extra_args=["--verbose"])
    assert cmd[:3] == ["/opt/trtexec", "--onnx=m.onnx", "--saveEngine=out/m.engine"]
    assert {"--skipInference", "--builderOptimizationLevel=3", "--maxAuxStreams=2", "--profilingVerbosity=detailed",
            "--memPoolSize=workspace:512M", "--noTF32", "--timingCacheFile=tc/timing.cache"} <= set(cmd)
    assert "--minShapes=input:1x3x32x32,'ids:0':1x7" in cmd and "--optShapes=input:8x3x32x32,'ids:0':8x7" in cmd
    assert "--maxShapes=input:16x3x32x32,'ids:0':16x7" in cmd
    assert ("--stronglyTyped" in cmd) == (major == 10)
    assert cmd[-1] == "--verbose" and set(flags(cmd[:-1])) <= KNOWN[major]
    assert not any(f in cmd for f in ("--fp16", "--bf16", "--int8", "--fp8", "--best"))


def test_build_command_minimal():
    plan = BuildPlan(tf32=True, optimization_level=0, max_aux_streams=0, workspace_bytes=None, shapes={})
    cmd = backend.build_command("trtexec", Path("m.onnx"), Path("m.engine"), plan, major=11)
    assert not any(a.startswith(("--memPoolSize", "--minShapes", "--timingCacheFile", "--noTF32")) for a in cmd)


@pytest.mark.parametrize("major, settings, want", [
    (11, {}, []),
    (11, {"cuda_graph": False, "data_transfers": True, "sync": "blocking"},
     ["--noCudaGraph", "--includeDataTransfers", "--noSpinWait"]),
    (10, {}, ["--useCudaGraph", "--noDataTransfers", "--useSpinWait", "--separateProfileRun"]),
    (10, {"cuda_graph": False, "data_transfers": True, "sync": "blocking"}, ["--separateProfileRun"]),
])
def test_inference_command_toggles_follow_the_major_version(major, settings, want):
    cmd = backend.inference_command("trtexec", Path("e.engine"), {"input": (8, 3, 32, 32)}, {**BENCH, **settings},
                                    major=major, exports=EXPORTS)
    toggles = {"--noCudaGraph", "--includeDataTransfers", "--noSpinWait", "--useCudaGraph", "--noDataTransfers",
               "--useSpinWait", "--separateProfileRun"}
    assert [a for a in cmd if a in toggles] == want
    assert set(flags(cmd)) <= KNOWN[major]
    assert {"--loadEngine=e.engine", "--warmUp=200", "--duration=3", "--iterations=10", "--infStreams=1",
            "--percentile=90,95,99", "--shapes=input:8x3x32x32", "--exportTimes=/o/times.json",
            "--exportProfile=/o/profile.json", "--exportLayerInfo=/o/layer_info.json"} <= set(cmd)


def test_no_profile_run_without_the_profile_export():
    exports = {k: v for k, v in EXPORTS.items() if k != "profile"}
    cmd = backend.inference_command("trtexec", Path("e"), {}, {**BENCH, "duration_s": 0.25, "streams": 2},
                                    major=10, exports=exports, extra_args=("--avgRuns=1",))
    assert "--separateProfileRun" not in cmd and not any(a.startswith("--exportProfile") for a in cmd)
    assert "--duration=0.25" in cmd and "--infStreams=2" in cmd and cmd[-1] == "--avgRuns=1"
    assert not any(a.startswith("--shapes") for a in cmd)  # a static engine needs none


def test_our_command_line_is_read_back_from_the_banner():
    cmd = backend.build_command("trtexec", Path("m.onnx"), Path("m.engine"), PLAN, major=10)
    got = parse.parse_log(f"&&&& RUNNING TensorRT.trtexec [TensorRT v101600] [b72] # {' '.join(cmd)}\n")
    assert got.version == "10.16.0" and got.command == " ".join(cmd)
    assert parse.settings(got)["batch_size"] == 8 and parse.settings(got)["tf32"] is False


def test_missing_trtexec_is_unsupported_with_how_to_get_it():
    with pytest.raises(Unsupported) as err:
        backend.locate("no-such-trtexec-here")
    message = str(err.value)
    assert "backend.path = 'no-such-trtexec-here'" in message and "nvcr.io/nvidia/tensorrt" in message
    from stages.trtexec import build

    with pytest.raises(Unsupported, match="no such executable"):
        build.environment({"path": "no-such-trtexec-here"})


def test_trials_other_than_one_are_unsupported(tmp_path):
    from stages.trtexec import benchmark

    with pytest.raises(Unsupported, match="benchmark.trials = 3"):
        benchmark.run({}, {"trials": 3}, tmp_path)


def test_minus_one_means_tensorrts_default():
    text = (DATA / "trt10_build_and_run.log").read_text()
    text = text.replace("MaxAuxStreams: 0", "MaxAuxStreams: -1").replace("BuilderOptimizationLevel: 3",
                                                                         "BuilderOptimizationLevel: -1")
    settings = parse.settings(parse.parse_log(text))
    # the level left to TensorRT is its default, 3; the streams left to its heuristic stay -1 ("auto"), not 0,
    # which would mean "forced to one stream"
    assert (settings["optimization_level"], settings["max_aux_streams"]) == (3, -1)
    assert parse.settings(log("trt10_build_and_run.log"))["max_aux_streams"] == 0  # a 0 that was given stays 0


def test_minus_one_aux_streams_is_not_passed_to_trtexec():
    plan = BuildPlan(tf32=True, optimization_level=3, max_aux_streams=-1, workspace_bytes=None, shapes={})
    cmd = backend.build_command("trtexec", Path("m.onnx"), Path("m.engine"), plan, major=11)
    assert not any(a.startswith("--maxAuxStreams") for a in cmd)
    zero = backend.build_command("trtexec", Path("m.onnx"), Path("m.engine"), replace(plan, max_aux_streams=0),
                                 major=11)
    assert "--maxAuxStreams=0" in zero


# ------------------------------------------------------------------------------------------- extra args

@pytest.mark.parametrize("major", [10, 11])
def test_extra_args_replace_our_flags_one_by_one(major):
    extra = ["--maxAuxStreams=4", "--noTF32", "--builderOptimizationLevel=5", "--verbose"]
    cmd = backend.build_command("trtexec", Path("m.onnx"), Path("m.engine"), PLAN, major=major, extra_args=extra)
    names = flags(cmd)
    assert len(names) == len(set(names)), names  # each flag once: trtexec would leave a second one unknown
    assert cmd[-4:] == extra and "--maxAuxStreams=2" not in cmd and "--builderOptimizationLevel=3" not in cmd
    assert cmd[0] == "trtexec" and "--onnx=m.onnx" in cmd and "--skipInference" in cmd  # the others stay


def test_extra_args_replace_boolean_and_valued_flags_of_the_inference_command():
    cmd = backend.inference_command("trtexec", Path("e.engine"), {"input": (8, 3, 32, 32)}, BENCH, major=10,
                                    exports=EXPORTS, extra_args=["--useCudaGraph", "--duration=10", "--shapes=x:1"])
    names = flags(cmd)
    assert len(names) == len(set(names)), names
    assert cmd.count("--useCudaGraph") == 1 and "--duration=10" in cmd and "--duration=3" not in cmd
    assert "--shapes=x:1" in cmd and "--shapes=input:8x3x32x32" not in cmd
    assert "--useSpinWait" in cmd and "--iterations=10" in cmd


def test_extra_args_with_nothing_in_common_are_appended():
    cmd = backend.inference_command("trtexec", Path("e"), {}, BENCH, major=11, exports={}, extra_args=["--avgRuns=1"])
    assert cmd == backend.inference_command("trtexec", Path("e"), {}, BENCH, major=11, exports={}) + ["--avgRuns=1"]


# ------------------------------------------------------------------------------------------- incomplete logs

def cut_at(text: str, label: str) -> str:
    """The log up to (not including) the summary line `label`: what a terminal scrollback or a paste loses."""
    lines = text.splitlines(keepends=True)
    return "".join(lines[:next(i for i, line in enumerate(lines) if f"] {label}:" in line)])


@pytest.mark.parametrize("label, missing", [
    ("Throughput", "'Throughput:', 'Latency:', 'Enqueue Time:'"), ("GPU Compute Time", "'GPU Compute Time:'"),
    ("Total GPU Compute Time", "'Total GPU Compute Time:'")])
def test_a_summary_cut_short_is_no_measurement(label, missing):
    text = cut_at((DATA / "trt11_run.log").read_text(), label)
    assert parse.parse_log(text).summary or label == "Throughput"
    with pytest.raises(backend.NoMeasurement, match="incomplete") as err:
        backend.ingest(text)
    assert missing in str(err.value)


def test_a_summary_missing_one_line_is_no_measurement():
    text = "".join(line for line in (DATA / "trt10_build_and_run.log").read_text().splitlines(keepends=True)
                   if "] Latency:" not in line)
    with pytest.raises(backend.NoMeasurement) as err:
        backend.ingest(text)
    assert "'Latency:'" in str(err.value) and "'GPU Compute Time:'" not in str(err.value)


def test_a_complete_summary_without_the_end_banner_is_accepted_with_a_note():
    text = (DATA / "trt11_run.log").read_text()
    tables, info, got = backend.ingest(text[:text.index("&&&& PASSED")])
    assert got.result is None and "&&&& PASSED" in info["note"]
    assert {r["metric"] for r in tables["summary"]} >= {"latency", "gpu_compute", "throughput"}
    assert backend.ingest(text)[1]["note"] is None  # with the banner, nothing to say


def test_name_repair_keeps_compact_profiles_apart():
    """One entry per line is how trtexec writes; a hand-written file on one line must not run names together."""
    text = '[{"count": 1}, {"name": "a"b", "timeMs": 1, "averageMs": 1}, {"name": "c", "timeMs": 2, "averageMs": 2}]'
    assert parse.parse_profile(text).mean_ms == {'a"b': 1, "c": 2}


# ------------------------------------------------------------------------------------------- other versions and shapes

@pytest.mark.parametrize("encoded, version", [(7103, "7.1.3"), (8003, "8.0.3"), (8601, "8.6.1"), (9300, "9.3.0"),
                                              (100000, "10.0.0"), (101600, "10.16.0"), (110100, "11.1.0")])
def test_the_banner_version_of_every_major(encoded, version):
    """NV_TENSORRT_VERSION is major*1000 + minor*100 + patch up to 9.x, major*10000 + ... from 10.0."""
    got = parse.parse_log(f"&&&& RUNNING TensorRT.trtexec [TensorRT v{encoded}] # trtexec --onnx=m.onnx\n")
    assert got.version == version


def test_8_0_log_prints_its_version_as_an_integer_and_names_with_colons():
    got = log("trt8_0_tf_names.log")
    assert (got.version, got.major, got.result, got.format) == ("8.0.3", 8, "PASSED", parse.FORMAT)
    assert got.inference_shapes == {"x:0": "4x1x28x28"} and parse.settings(got)["batch_size"] == 4
    assert parse.parse_log("[08/10/2021-09:14:02] [I] TensorRT version: 8003\n").version == "8.0.3"
    assert got.summary["end_to_end"] == {"min": 0.301025, "max": 0.802734, "mean": 0.392617, "median": 0.390869,
                                         "p99": 0.451416}


def test_an_8_6_log_cut_before_its_dotted_version_line_keeps_the_banners():
    text = (DATA / "trt8_6_wrapped.log").read_text()
    assert "TensorRT version" not in text and log("trt8_6_wrapped.log").version == "8.6.1"


@pytest.mark.parametrize("command, batch", [
    ("trtexec --onnx=m --shapes=x:0:4x1x28x28", 4), ("trtexec --onnx=m --shapes=x:0:4x1x28x28,y:0:4x7", 4),
    ("trtexec --onnx=m --optShapes='a:b':32x3", 32), ("trtexec --onnx=m --shapes=x:0x3", 0),
    ("trtexec --onnx=m --shapes=x:scalar", None)])
def test_batch_is_read_from_the_right_of_the_shape(command, batch):
    assert parse.batch_from_command(command) == batch


def test_the_logs_own_inference_shape_wins_over_the_command_line():
    text = ("&&&& RUNNING TensorRT.trtexec [TensorRT v101600] # trtexec --loadEngine=e --shapes=x:0:4x1x28x28\n"
            "[I] Input inference shape : x:0=6x1x28x28\n")  # 10.x/11.x put a space before the colon
    assert parse.settings(parse.parse_log(text))["batch_size"] == 6


def test_a_batch_of_zero_is_refused():
    text = (DATA / "trt8_0_tf_names.log").read_text().replace("x:0=4x1x28x28", "x:0=0x1x28x28")
    with pytest.raises(backend.NoMeasurement, match="batch size is 0"):
        backend.ingest(text)
    with pytest.raises(backend.NoMeasurement, match="--batch-size"):
        backend.ingest((DATA / "trt8_0_tf_names.log").read_text(), batch_size=0)


def test_samples_per_second_count_the_batch_of_a_tensor_named_with_a_colon():
    tables, _, _ = backend.ingest((DATA / "trt8_0_tf_names.log").read_text())
    rows = {(r["metric"], r["stat"]): r["value"] for r in tables["summary"]}
    assert rows[("throughput", "samples_per_s")] == pytest.approx(2498.33 * 4)
    assert rows[("end_to_end", "median")] == 0.390869


# ------------------------------------------------------------------------------------------- prefixes

@pytest.mark.parametrize("name", ["trt10_pasted_no_timestamps.log", "trt8_6_wrapped.log"])
def test_a_complete_summary_under_another_prefix_is_accepted(name):
    tables, info, got = backend.ingest((DATA / name).read_text())
    assert got.has_summary and not got.missing_summary_lines
    assert {r["metric"] for r in tables["summary"]} >= {"latency", "gpu_compute", "throughput"}


def test_prefixes_before_the_severity_tag_are_stripped():
    got = parse.parse_log("[INFO] [05/27/2023-12:05:31] [I] Throughput: 1 qps\n"
                          "wrapper: [I] === Device Information ===\n[I] Selected Device: NVIDIA A10\n"
                          "[05/27/2023-12:05:33] [W] * GPU compute time is unstable, with coefficient of "
                          "variance = 3%.\n")
    assert got.sections == {"Device Information": {"Selected Device": "NVIDIA A10"}}
    assert got.unstable_cov_pct == 3.0 and got.stamps == 2 and got.started.isoformat() == "2023-05-27T12:05:31"
    wrapped = log("trt8_6_wrapped.log")
    assert wrapped.result == "PASSED" and wrapped.command.startswith("trtexec --loadEngine=resnet18.engine")
    assert parse.settings(wrapped)["batch_size"] == 16 and parse.settings(wrapped)["gpu"] == "NVIDIA A10"


# ------------------------------------------------------------------------------------------- 7.x

def test_7x_report_is_parsed():
    got = log("trt7_run.log")
    assert (got.format, got.result, got.version) == (parse.FORMAT_7X, "PASSED", None)  # 7.x's banner has no version
    assert got.command.startswith("trtexec --avgRuns=3 --deploy=resnet50.prototxt")
    assert got.summary["latency"] == {"min": 55.1414, "max": 57.6218, "mean": 55.3183, "median": 55.2527,
                                      "p99": 57.542}
    assert got.summary["end_to_end"] == {"min": 55.1486, "max": 57.6291, "mean": 55.3256, "median": 55.2599,
                                         "p99": 57.5493}
    assert got.summary["enqueue"] == {"min": 1.85498, "max": 2.40674, "median": 1.92139}
    assert got.summary["gpu_compute"] == {"min": 55.0659, "max": 57.5464, "mean": 55.2428, "median": 55.1772,
                                          "p99": 57.4666}
    assert (got.throughput_qps, got.host_walltime_s, got.gpu_compute_total_s) == (18.0758, 3.04274, 3.03835)
    assert (got.warmup_queries, got.timed_queries) == (4, 55) and not got.missing_summary_lines
    assert parse.settings(got)["streams"] == 1 and parse.settings(got)["gpu"] == "Jetson-AGX"


def test_7x_report_is_ingested_and_marked():
    tables, info, _ = backend.ingest((DATA / "trt7_run.log").read_text())
    rows = {(r["metric"], r["stat"]): r["value"] for r in tables["summary"]}
    assert info["log_format"] == "trtexec 7.x" and info["note"] is None
    assert rows[("latency", "p99")] == 57.542 and rows[("end_to_end", "mean")] == 55.3256
    assert rows[("throughput", "qps")] == 18.0758 and rows[("gpu_compute", "total")] == 3.03835
    assert rows[("host_walltime", "total")] == 3.04274


def test_7x_report_cut_short_or_with_a_zero_throughput():
    text = (DATA / "trt7_run.log").read_text()
    with pytest.raises(backend.NoMeasurement, match="'GPU Compute:'.*'total compute time:'"):
        backend.ingest(text[:text.index("] GPU Compute") - 20])
    # explicit-batch networks: 7.x counts queries as --batch, which is 0, and prints 0 qps
    tables, info, _ = backend.ingest(text.replace("throughput: 18.0758 qps", "throughput: 0 qps"))
    assert "throughput: 0 qps" in info["note"] and "throughput" not in {r["metric"] for r in tables["summary"]}


# ------------------------------------------------------------------------------------------- true reasons

def test_a_run_profiled_inside_its_timed_loop_says_so_and_keeps_its_printed_profile():
    got = log("trt10_dump_profile_no_e2e.log")
    assert got.e2e_not_reported and not got.has_summary and got.result == "PASSED"
    assert got.printed_profile.count == 27085 and len(got.printed_profile.mean_ms) == 5
    with pytest.raises(backend.NoMeasurement) as err:
        backend.ingest((DATA / "trt10_dump_profile_no_e2e.log").read_text())
    assert "e2e network timing is not reported" in str(err.value) and "--separateProfileRun" in str(err.value)
    assert "end banner" not in str(err.value) and "skipInference" not in str(err.value)
    layers = {r["layer"]: r for r in err.value.tables["layers"]}
    assert set(layers) == set(got.printed_profile.mean_ms) and "Total" not in layers
    assert layers["node_Conv_55 + node_relu"]["time_ms"] == 0.0173
    assert layers["node_Conv_55 + node_relu"]["median_ms"] == 0.0172


@pytest.mark.parametrize("header, row, median", [
    ("Layer   Time (ms)   Avg. Time (ms)   Time %", "conv 1   12.50   0.0125   62.5", None),  # 7.x-8.2
    ("Layer   Time (ms)   Avg. Time (ms)   Median Time (ms)   Time %", "conv 1   12.50   0.0125   0.0120   62.5",
     0.012)])  # 8.4-8.5
def test_printed_profiles_of_older_versions(header, row, median):
    text = f"=== Profile (1000 iterations ) ===\n   {header}\n  {row}\n Total   20.00   0.0200   100.0\n\n"
    prof = parse.parse_log(text).printed_profile
    assert prof.count == 1000 and prof.mean_ms == {"conv 1": 0.0125} and prof.median_ms == {"conv 1": median}


def test_a_printed_profile_gives_the_layers_table_without_an_export():
    tables, info, _ = backend.ingest((DATA / "trt10_build_and_run.log").read_text())
    assert len(tables["layers"]) == 5 and info["profiled_inferences"] == 2104


def test_two_appended_runs_are_never_mixed():
    first, second = (DATA / "trt10_build_and_run.log").read_text(), (DATA / "trt11_run.log").read_text()
    assert len(parse.split_runs(first + second)) == 2 and parse.split_runs(first) == [first]
    tables, info, got = backend.ingest(first + second)
    assert got.version == "11.1.0" and got.command.startswith("trtexec --loadEngine=tiny_cnn_fp16.engine")
    assert parse.settings(got)["cuda_graph"] is True and "2 trtexec runs" in info["note"]
    assert "run 2 of 2" in info["note"]
    rows = {(r["metric"], r["stat"]): r["value"] for r in tables["summary"]}
    assert rows[("throughput", "qps")] == 182039
    failed = (DATA / "trt10_failed.log").read_text()
    tables, info, got = backend.ingest(second + failed)  # the later run failed: the earlier is the measurement
    assert got.version == "11.1.0" and "run 1 of 2" in info["note"]
    with pytest.raises(backend.NoMeasurement, match="2 trtexec runs.*run 1: .*FAILED.*run 2: .*FAILED"):
        backend.ingest(failed + failed)


def test_job_seconds_is_unknown_without_two_timestamps():
    assert log("trt10_pasted_no_timestamps.log").job_seconds is None
    one = "&&&& RUNNING TensorRT.trtexec [TensorRT v101600] # trtexec\n[11/20/2026-17:42:10] [I] Device: 0\n"
    assert parse.parse_log(one).job_seconds is None
    assert log("trt10_build_and_run.log").job_seconds == 27.0
