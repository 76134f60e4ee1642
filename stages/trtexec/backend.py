"""trtexec with this pipeline's knobs: finding it, its command lines, and its output turned into our tables.

The stages (stages/trtexec/build.py, benchmark.py) are thin; this module holds what they share with
`python -m pipeline.ingest trtexec`. Command lines are built by pure functions, tested on a CPU.

The flags depend on the major version. trtexec 10.x times with data transfers on, blocking sync and no CUDA
graph unless told otherwise (--noDataTransfers, --useSpinWait, --useCudaGraph), needs --stronglyTyped for a
strongly typed network, and profiles inside the timed loop unless given --separateProfileRun. trtexec 11.x
has the opposite defaults (the old flags only print a deprecation warning), is always strongly typed and always
profiles in a separate run; it is given --includeDataTransfers, --noSpinWait, --noCudaGraph where wanted.
"""
from __future__ import annotations

import functools
import subprocess
from pathlib import Path

from stages import availability, timing_stats, timing_tables
from stages import tensorrt as trt_env
from stages import trtexec as plugin
from stages.api import StageInputError, Unsupported
from stages.tensorrt import inspector
from stages.tensorrt.build import BuildPlan
from stages.trtexec import parse

SOURCE = "trtexec-profile"
NO_END_BANNER = ("the log has no final '&&&& PASSED' line (only the summary pasted?): its summary is complete and "
                 "was accepted, but that trtexec finished cleanly is not shown")
EXPORTS = {"times": "times.json", "profile": "profile.json", "layers": "layer_info.json"}


# ----------------------------------------------------------------------------------------- finding trtexec

def locate(path: str = "trtexec") -> str:
    """The trtexec executable that `backend.path` names, or Unsupported saying how to get one."""
    found = availability.locate(path, (plugin.NGC_PATH,) if path == "trtexec" else ())
    if not found:
        raise Unsupported(f"backend.path = '{path}': no such executable (not on PATH, not at {plugin.NGC_PATH}). "
                          f"{plugin.HOW_TO_GET}")
    return found


@functools.lru_cache(maxsize=8)
def version(exe: str) -> str:
    """TensorRT version of a trtexec, from the banner it prints first (`[TensorRT v110100]`)."""
    proc = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=120)
    found = parse.parse_log(proc.stdout + proc.stderr).version
    if not found:
        raise RuntimeError(f"cannot tell which TensorRT {exe} belongs to: no '&&&& RUNNING TensorRT.trtexec "
                           f"[TensorRT vNNNNNN]' line in what `{exe} --help` printed")
    return found


def environment(path: str) -> dict:
    """What a trtexec-built engine depends on (its cache key): trtexec's TensorRT, the GPU, CUDA."""
    return {"tensorrt": version(locate(path)), **trt_env.gpu()}


# ----------------------------------------------------------------------------------------- command lines

def shapes_arg(shapes: dict[str, list[int] | tuple[int, ...]]) -> str:
    """'x:8x3x32x32,y:8x10'; names with ':' or ',' in single quotes, as trtexec's help says."""
    def name(n: str) -> str:
        return f"'{n}'" if any(c in n for c in ":,") else n
    return ",".join(f"{name(n)}:{'x'.join(str(d) for d in s) if len(s) else 'scalar'}" for n, s in shapes.items())


def build_command(exe: str, onnx: Path, engine: Path, build_plan: BuildPlan, *, major: int,
                  timing_cache: Path | None = None, extra_args: tuple[str, ...] | list[str] = ()) -> list[str]:
    """trtexec building `engine` as stages.tensorrt.build would: same profile, level, streams, pool, TF32."""
    cmd = [exe, f"--onnx={onnx}", f"--saveEngine={engine}", "--skipInference",
           f"--builderOptimizationLevel={build_plan.optimization_level}", "--profilingVerbosity=detailed"]
    if build_plan.max_aux_streams != -1:  # -1: not given, so TensorRT's heuristic picks the number
        cmd.append(f"--maxAuxStreams={build_plan.max_aux_streams}")
    if build_plan.workspace_bytes:
        cmd.append(f"--memPoolSize=workspace:{build_plan.workspace_bytes >> 20}M")
    if build_plan.shapes:
        for i, flag in enumerate(("--minShapes", "--optShapes", "--maxShapes")):
            cmd.append(f"{flag}={shapes_arg({n: s[i] for n, s in build_plan.shapes.items()})}")
    if not build_plan.tf32:
        cmd.append("--noTF32")
    if major < 11:
        cmd.append("--stronglyTyped")  # the precision is the graph's; 11.x is always strongly typed
    if timing_cache is not None:
        cmd.append(f"--timingCacheFile={timing_cache}")
    return with_extra_args(cmd, extra_args)


def inference_command(exe: str, engine: Path, shapes: dict[str, tuple[int, ...]], params: dict, *, major: int,
                      exports: dict[str, Path], extra_args: tuple[str, ...] | list[str] = ()) -> list[str]:
    """trtexec timing `engine` with the benchmark.* knobs and writing the exports named in `exports`
    (keys of EXPORTS; leave out "profile" for no profiling run)."""
    cmd = [exe, f"--loadEngine={engine}", f"--warmUp={params['warmup_ms']:g}",
           f"--duration={params['duration_s']:g}", f"--iterations={params['min_iterations']}",
           f"--infStreams={params['streams']}", f"--percentile={','.join(map(str, timing_stats.PERCENTILES))}"]
    if shapes:
        cmd.append(f"--shapes={shapes_arg(shapes)}")
    flags = {"times": "--exportTimes", "profile": "--exportProfile", "layers": "--exportLayerInfo"}
    cmd += [f"{flags[k]}={path}" for k, path in exports.items()]
    graph, transfers, spin = params["cuda_graph"], params["data_transfers"], params["sync"] == "spin"
    if major >= 11:
        cmd += [f for f, on in (("--noCudaGraph", not graph), ("--includeDataTransfers", transfers),
                                ("--noSpinWait", not spin)) if on]
    else:
        cmd += [f for f, on in (("--useCudaGraph", graph), ("--noDataTransfers", not transfers),
                                ("--useSpinWait", spin), ("--separateProfileRun", "profile" in exports)) if on]
    return with_extra_args(cmd, extra_args)


def validation_command(exe: str, engine: Path, shapes: dict[str, tuple[int, ...]], input_files: dict[str, Path],
                       output_json: Path, extra_args: tuple[str, ...] | list[str] = ()) -> list[str]:
    """trtexec running `engine` once on the inputs in `input_files` (raw binaries, one per input) and writing
    its outputs to `output_json` (--exportOutput). The names are quoted, so a ':' in a path is read as part of
    the path (sampleOptions.cpp splitNameAndValue); a ',' would split the list."""
    bad = [str(f) for f in (*input_files.values(), output_json) if any(c in str(f) for c in ",'")]
    if bad:
        raise StageInputError(f"trtexec cannot be given a file whose path holds ',' or \"'\": {bad[0]}")
    loads = ",".join(f"'{name}':{path}" for name, path in input_files.items())
    cmd = [exe, f"--loadEngine={engine}", f"--loadInputs={loads}", f"--exportOutput={output_json}",
           "--iterations=1", "--warmUp=0", "--duration=0"]
    if shapes:
        cmd.append(f"--shapes={shapes_arg(shapes)}")
    return with_extra_args(cmd, extra_args)


def with_extra_args(cmd: list[str], extra_args: tuple[str, ...] | list[str]) -> list[str]:
    """`cmd` with backend.extra_args appended, each replacing our flag of the same name (the part before '=';
    a boolean flag like --noTF32 is its own name). trtexec keeps its options in a multimap and takes one value
    per flag, so a flag given twice is left over and fails the run with "Unknown option"."""
    extra = list(extra_args)
    theirs = {flag_name(a) for a in extra}
    return [cmd[0], *(a for a in cmd[1:] if flag_name(a) not in theirs), *extra]


def flag_name(arg: str) -> str:
    return arg.split("=", 1)[0]


# ----------------------------------------------------------------------------------------- ingestion

class NoMeasurement(ValueError):
    """The log holds no (complete) measurement: trtexec failed, stopped early, skipped inference, or profiled
    inside the timed run. `log` is the run it is about; `tables` what could still be read (e.g. the per-layer
    table trtexec printed), `info` the runs-row facts that go with them."""

    def __init__(self, message: str, log: parse.Log | None = None, tables: dict | None = None,
                 info: dict | None = None):
        super().__init__(message)
        self.log, self.tables, self.info = log, tables or {}, info or {}


def ingest(log_text: str, times_text: str | None = None, profile_text: str | None = None,
           layers_text: str | None = None, batch_size: int | None = None) -> tuple[dict, dict, parse.Log]:
    """trtexec's log and exports as our tables (summary, samples, layers; no run_id) and runs-row info.

    A log that several runs were appended to (two '&&&& RUNNING' banners, as `tee -a` makes) is never read as one:
    the last run with a complete measurement is ingested, with a note saying so; with none, the last run's
    reason is given. The exports are taken to belong to the run ingested."""
    runs = parse.split_runs(log_text)
    if len(runs) == 1:
        return _ingest_run(runs[0], times_text, profile_text, layers_text, batch_size)
    failures: list[NoMeasurement] = []  # the last run's first
    for index in range(len(runs), 0, -1):
        try:
            tables, info, log = _ingest_run(runs[index - 1], times_text, profile_text, layers_text, batch_size)
        except NoMeasurement as err:
            failures.append(err)
            continue
        note = (f"the log holds {len(runs)} trtexec runs (appended to one file, e.g. by `tee -a`): ingested run "
                f"{index} of {len(runs)} (`{log.command}`), the last with a complete measurement; the others "
                f"were left out")
        info["note"] = "; ".join(n for n in (note, info.get("note")) if n)
        return tables, info, log
    reasons = "; ".join(f"run {i}: {err}" for i, err in enumerate(reversed(failures), 1))
    last = failures[0]
    raise NoMeasurement(f"the log holds {len(runs)} trtexec runs (appended to one file) and none has a complete "
                        f"measurement: {reasons}", last.log, last.tables, last.info)


def _no_summary_reason(log: parse.Log) -> str:
    if log.e2e_not_reported:
        return ("trtexec did not report end-to-end timing: it profiled layers inside the timed run (--dumpProfile "
                "or --exportProfile without --separateProfileRun), and then prints 'The e2e network timing is not "
                "reported since it is inaccurate due to the extra synchronizations when the profiler is enabled' "
                "instead of a performance summary. The per-layer profile it printed is kept (layers table); "
                "re-run with --separateProfileRun for a measurement")
    if log.result == "FAILED":
        ending = "trtexec reported FAILED"
    elif log.result is None:
        ending = "the log stops before trtexec's end banner"
    elif _skipped_inference(log):
        ending = "trtexec ran with --skipInference: a build only"
    else:
        ending = "trtexec reported PASSED but printed no summary"
    return f"no '=== Performance summary ===' block (nor a 7.x 'Host Latency' report) in the log ({ending})"


def _skipped_inference(log: parse.Log) -> bool:
    said = log.sections.get("Build Options", {}).get("Skip inference") or log.sections.get(
        "Inference Options", {}).get("Skip inference")
    return said == "Enabled" or "--skipInference" in (log.command or "").split()


def _layers(log: parse.Log, profile_text: str | None, layers_text: str | None) -> tuple[dict, dict]:
    """The layers table from --exportProfile (else the table trtexec printed) joined with --exportLayerInfo."""
    profile = parse.parse_profile(profile_text) if profile_text else None
    if profile is None and log.printed_profile is not None and log.printed_profile.mean_ms:
        profile = log.printed_profile
    if not (profile or layers_text):
        return {}, {"profiled_inferences": None, "layers_overlap": None, "layers_note": None}
    layer_info = inspector.parse(layers_text) if layers_text else []
    rows = inspector.rows(profile.mean_ms if profile else {}, layer_info, SOURCE,
                          median_ms=profile.median_ms if profile else None)
    overlap = bool(log.aux_streams) or inspector.uses_aux_streams(layer_info)
    return {"layers": rows}, {"profiled_inferences": profile.count if profile else None, "layers_overlap": overlap,
                              "layers_note": inspector.OVERLAP_NOTE if overlap else None}


def _ingest_run(log_text: str, times_text: str | None, profile_text: str | None, layers_text: str | None,
                batch_size: int | None) -> tuple[dict, dict, parse.Log]:
    log = parse.parse_log(log_text)
    if not log.has_summary:
        tables, layer_info = _layers(log, profile_text, layers_text) if log.e2e_not_reported else ({}, {})
        info = {**layer_info, "trtexec_result": log.result, "log_format": log.format}
        raise NoMeasurement(_no_summary_reason(log), log, tables, info)
    if log.missing_summary_lines:  # cut inside the block: what is there would pass for a whole measurement
        missing = ", ".join(f"'{label}:'" for label in log.missing_summary_lines)
        block = "7.x report ('Host Latency' ...)" if log.format == parse.FORMAT_7X else \
            "'=== Performance summary ===' block"
        raise NoMeasurement(f"the performance summary is incomplete, it has no {missing} line (the log was cut "
                            f"inside the {block}?)", log)
    known = parse.settings(log)
    batch = batch_size if batch_size is not None else known["batch_size"] if known["batch_size"] is not None else 1
    if batch < 1:
        raise NoMeasurement(f"the batch size is {batch} (from "
                            f"{'--batch-size' if batch_size is not None else 'the shapes in the log'}): samples/s "
                            f"cannot be computed; give the real batch with --batch-size", log)
    times = parse.parse_times(times_text) if times_text else None
    notes = []
    if log.format == parse.FORMAT_7X and log.throughput_qps == 0:
        notes.append("trtexec 7.x printed 'throughput: 0 qps' (it counts queries as its --batch, which is 0 for an "
                     "explicit-batch network): no throughput was recorded")
    tables = {"summary": _summary_rows(log, times, batch)}
    if times:  # per-query timings in the layout of our own harness's samples
        tables["samples"] = timing_tables.samples([times])
    layer_tables, layer_info = _layers(log, profile_text, layers_text)
    tables.update(layer_tables)
    if log.result is None:
        notes.append(NO_END_BANNER)
    info = {
        "iterations": log.timed_queries if log.timed_queries is not None else len(times["latency"]) if times else None,
        "warmup_iterations": log.warmup_queries, "verdict": timing_stats.verdict_label(log.verdicts),
        "warnings": " | ".join(log.warnings) or None, "unstable_cov_pct": log.unstable_cov_pct,
        "seconds_timed": log.host_walltime_s, "timing": "trtexec (its own CUDA events)",
        "trtexec_result": log.result, **layer_info, "log_format": log.format,
        "note": "; ".join(notes) or None,
        **{k: known[k] for k in ("cuda_graph", "data_transfers", "sync", "streams", "tensorrt", "gpu")},
    }
    return tables, info, log


def _summary_rows(log: parse.Log, times: dict[str, list[float]] | None, batch: int) -> list[dict]:
    rows = [{"metric": m, "stat": s, "value": v, "unit": "ms"} for m, stats in log.summary.items()
            for s, v in stats.items()]
    covs = {}  # trtexec prints a CoV only in its warning; the exported durations give the others'
    for metric, values in (times or {}).items():
        # enqueue is a difference of rounded timestamps (parse.parse_times); h2d/d2h are all zero without transfers
        if metric != "enqueue" and values and sum(values) > 0:
            covs[metric] = timing_stats.describe(values)["cov"]
    if "gpu_compute" not in covs and log.unstable_cov_pct is not None:
        covs["gpu_compute"] = log.unstable_cov_pct
    rows += [{"metric": m, "stat": "cov", "value": c, "unit": "%"} for m, c in covs.items()]
    if log.throughput_qps is not None and not (log.format == parse.FORMAT_7X and log.throughput_qps == 0):
        rows += [{"metric": "throughput", "stat": "qps", "value": log.throughput_qps, "unit": "qps"},
                 {"metric": "throughput", "stat": "samples_per_s", "value": log.throughput_qps * batch,
                  "unit": "samples/s"}]
    if log.host_walltime_s is not None:
        rows.append({"metric": "host_walltime", "stat": "total", "value": log.host_walltime_s, "unit": "s"})
    if log.gpu_compute_total_s is not None:
        rows.append({"metric": "gpu_compute", "stat": "total", "value": log.gpu_compute_total_s, "unit": "s"})
    return rows

