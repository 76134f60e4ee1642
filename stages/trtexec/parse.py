"""What trtexec writes, parsed: its log and its JSON exports.

Formats follow NVIDIA/TensorRT's samples/common (sampleReporting.cpp, sampleOptions.cpp, logging.h) at 7.x to
11.x:
- Log lines start `[MM/DD/YYYY-HH:MM:SS] [I] ` (W, E, V for the other severities); a paste may lack the timestamp
  (`[I] ...`) and a wrapper may put its own text in front (`[INFO] [05/27/2023-12:05:31] [I] ...`). The first and
  last lines are `&&&& RUNNING|PASSED|FAILED TensorRT.trtexec [TensorRT v110100] [b106] # trtexec --onnx=...`;
  7.x has no `[TensorRT v...]` there. The version is NV_TENSORRT_VERSION: major*1000 + minor*100 + patch up to
  9.x (`v8601`, and 8.0-8.2 also print `TensorRT version: 8003`), major*10000 + minor*100 + patch from 10.0.
- Options and device facts come in blocks (`=== Build Options ===`, `=== Inference Options ===`,
  `=== Device Information ===` ...) of `Key: value` lines.
- `=== Performance summary ===` then `Throughput: <f> qps`, one line per metric (`Latency: min = <f> ms,
  max = ..., mean = ..., median = ..., percentile(90%) = <f> ms, ...`; likewise `Enqueue Time`, `H2D Latency`,
  `GPU Compute Time`, `D2H Latency`), `Total Host Walltime: <f> s`, `Total GPU Compute Time: <f> s`.
  8.0-8.2 add `End-to-End Host Latency: min = ...` after `Latency`.
- 7.x has no summary block but `Host Latency`, `min: <f> ms (end to end <f> ms)`, max, mean, median,
  `percentile: <f> ms at 99% (end to end <f> ms at 99%)`, `throughput: <f> qps`, `walltime: <f> s`, then
  `Enqueue Time` (min, max, median) and `GPU Compute` (min, max, mean, median, percentile,
  `total compute time: <f> s`), each on its own line.
- With --dumpProfile, the per-layer table `=== Profile (N iterations ) ===`: 8.6 and later print the columns
  `Time(ms) Avg.(ms) Median(ms) Time(%) Layer`, 8.4-8.5 `Layer Time (ms) Avg. Time (ms) Median Time (ms) Time %`,
  7.x-8.2 the same without the median; a `Total` row ends it. Without --separateProfileRun (10.x and earlier)
  trtexec prints no summary but "The e2e network timing is not reported since it is inaccurate ...".
- Warnings are `[W] * ...` lines, e.g. `* GPU compute time is unstable, with coefficient of variance = 3.2%.`
Numbers are C++ stream output: `12.5`, `1.23457e+06`, `9.53674e-07`, or `inf`/`nan`.
--exportLayerInfo is the engine inspector's JSON: stages.tensorrt.inspector parses it.
"""
from __future__ import annotations

import datetime as dt
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from stages import timing_stats

FLOAT = r"[-+]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|inf(?:inity)?|nan)"
# Whatever comes first (a wrapper's own prefix), then trtexec's optional timestamp, then its severity tag
_PREFIX = re.compile(r"^.*?(?:\[(\d{2}/\d{2}/\d{4}-\d{2}:\d{2}:\d{2})\] *)?\[([VIWEF])\](?: |$)")
_BANNER = re.compile(r"&&&& (\w+) TensorRT\.trtexec(?: \[TensorRT v(\d+)\])?(?: \[b\d+\])? # (.*)$")
_HEADER = re.compile(r"^=== (.+?) ===$")
_KEY_VALUE = re.compile(r"^([A-Za-z][^:]*?):\s*(.*)$")
_STAT = re.compile(rf"(min|max|mean|median|percentile\(({FLOAT})%\)) = ({FLOAT}) ms", re.IGNORECASE)
SUMMARY = "Performance summary"
# trtexec's metric labels -> our metric names (the same as the GPU harness's)
METRICS = {"Latency": "latency", "Enqueue Time": "enqueue", "H2D Latency": "h2d", "GPU Compute Time": "gpu_compute",
           "D2H Latency": "d2h", "End-to-End Host Latency": "end_to_end"}
# Every line of the block, in the order trtexec prints them (sampleReporting.cpp, 8.6 to 11.1 alike): a log that
# lacks one was cut inside the block, and its statistics are partial.
SUMMARY_LINES = ("Throughput", "Latency", "Enqueue Time", "H2D Latency", "GPU Compute Time", "D2H Latency",
                 "Total Host Walltime", "Total GPU Compute Time")
# 7.x's report (sampleReporting.cpp printEpilog at 7.2.1): its blocks -> our metrics, and the lines it must hold
FORMAT = "trtexec 8.x+"
FORMAT_7X = "trtexec 7.x"
LEGACY_BLOCKS = {"Host Latency": "latency", "Enqueue Time": "enqueue", "GPU Compute": "gpu_compute"}
LEGACY_LINES = ("Host Latency", "throughput", "walltime", "Enqueue Time", "GPU Compute", "total compute time")
_LEGACY_STAT = re.compile(rf"^(min|max|mean|median|percentile|throughput|walltime|total compute time): ({FLOAT})"
                          rf"(?: ms)?(?: at ({FLOAT})%)?(?: \(end to end ({FLOAT}) ms(?: at {FLOAT}%)?\))?")
E2E_NOT_REPORTED = "The e2e network timing is not reported"
_PROFILE_ROW = {"numbers_first": re.compile(rf"^({FLOAT})\s+({FLOAT})\s+({FLOAT})\s+({FLOAT})\s+(.+?)$"),
                "name_first_median": re.compile(rf"^(.+?)\s+({FLOAT})\s+({FLOAT})\s+({FLOAT})\s+({FLOAT})$"),
                "name_first": re.compile(rf"^(.+?)\s+({FLOAT})\s+({FLOAT})\s+({FLOAT})$")}
# trtexec's warnings -> stages.timing_stats verdicts
_VERDICTS = {"GPU compute time is unstable": timing_stats.UNSTABLE,
             "Throughput may be bound by Enqueue Time": timing_stats.ENQUEUE_BOUND,
             "Throughput may be bound by host-to-device": timing_stats.TRANSFER_BOUND,
             "Throughput may be bound by device-to-host": timing_stats.TRANSFER_BOUND,
             "Multiple inference streams are used": timing_stats.LATENCY_UNRELIABLE}


def number(text: str) -> float:
    return float(text)  # Python's float() reads every form C++ writes, "1e-05", "inf", "-nan" included


@dataclass
class Log:
    version: str | None = None   # "10.16.0"
    command: str | None = None   # the command line as the banner repeats it
    result: str | None = None    # PASSED | FAILED | None (the log stops before the end banner)
    sections: dict[str, dict[str, str]] = field(default_factory=dict)  # block title -> {key: value}
    summary: dict[str, dict[str, float]] = field(default_factory=dict)  # metric -> stat -> ms
    throughput_qps: float | None = None
    host_walltime_s: float | None = None
    gpu_compute_total_s: float | None = None
    warmup_queries: int | None = None
    warmup_ms: float | None = None
    timed_queries: int | None = None
    warnings: list[str] = field(default_factory=list)
    has_summary: bool = False  # the "=== Performance summary ===" header was there
    summary_lines: list[str] = field(default_factory=list)  # the SUMMARY_LINES labels the block holds
    aux_streams: int | None = None  # from "The engine uses N auxiliary streams" (printed with a profile)
    started: dt.datetime | None = None
    ended: dt.datetime | None = None
    stamps: int = 0  # lines with a timestamp
    running: bool = False  # the log holds the '&&&& RUNNING' banner (it starts where the job started)
    format: str | None = None  # FORMAT or FORMAT_7X: which report the measurement came from
    inference_shapes: dict[str, str] = field(default_factory=dict)  # "Input inference shape: x:0=4x1x28x28"
    e2e_not_reported: bool = False  # profiled inside the timed run: trtexec printed no summary on purpose
    printed_profile: Profile | None = None  # the `=== Profile ===` table trtexec printed (--dumpProfile)
    _legacy: str | None = field(default=None, repr=False)  # the 7.x block being read
    _profile_layout: str | None = field(default=None, repr=False)

    @property
    def major(self) -> int | None:
        return int(self.version.split(".")[0]) if self.version else None

    @property
    def missing_summary_lines(self) -> list[str]:
        wanted = LEGACY_LINES if self.format == FORMAT_7X else SUMMARY_LINES
        return [label for label in wanted if label not in self.summary_lines]

    @property
    def job_seconds(self) -> float | None:
        """From the first to the last timestamp: only for a log that starts with the job (its RUNNING banner) and
        has two timestamps at least; otherwise the log does not say."""
        if not (self.running and self.stamps >= 2 and self.started and self.ended):
            return None
        return (self.ended - self.started).total_seconds()

    @property
    def unstable_cov_pct(self) -> float | None:
        for warning in self.warnings:
            match = re.search(rf"coefficient of variance = ({FLOAT})%", warning)
            if match:
                return number(match.group(1))
        return None

    @property
    def verdicts(self) -> list[str]:
        found = {v for w in self.warnings for prefix, v in _VERDICTS.items() if w.startswith(prefix)}
        return [v for v in dict.fromkeys(_VERDICTS.values()) if v in found]


def split_runs(text: str) -> list[str]:
    """The runs a log holds, one text each: a file that several runs were appended to (`tee -a`) has one
    '&&&& RUNNING' banner per run. What comes before the first banner goes with the first run."""
    lines = text.splitlines(keepends=True)
    starts = [i for i, line in enumerate(lines) if (b := _BANNER.search(line)) and b.group(1) == "RUNNING"]
    bounds = [0, *starts[1:], len(lines)]
    return ["".join(lines[a:b]) for a, b in zip(bounds, bounds[1:])]


def parse_log(text: str) -> Log:
    out = Log()
    section = None
    for raw in text.splitlines():
        line, stamp = _strip_prefix(raw.rstrip())
        if stamp:
            out.started = out.started or stamp
            out.ended = stamp
            out.stamps += 1
        banner = _BANNER.search(line)
        if banner:
            out.running = out.running or banner.group(1) == "RUNNING"
            out.result = None if banner.group(1) == "RUNNING" else banner.group(1)
            out.command = banner.group(3).strip()
            if banner.group(2):
                out.version = out.version or _version_from_int(int(banner.group(2)))
            continue
        header = _HEADER.match(line.strip())
        if header:
            section, out._legacy = header.group(1), None
            if section == SUMMARY:
                out.has_summary, out.format = True, FORMAT
            if section.startswith("Profile ("):
                count = re.search(r"\((\d+) iterations", section)
                out.printed_profile = Profile(int(count.group(1)) if count else 0, {}, {})
                out._profile_layout = None
            continue
        if not line.strip():
            section, out._legacy = None, None
            continue
        if line.startswith("* "):
            out.warnings.append(line[2:].strip())
        elif section == SUMMARY:
            _summary_line(out, line)
        elif section is not None and section.startswith("Profile (") and out.printed_profile is not None:
            _profile_line(out, line.strip())
        elif _legacy_line(out, line.strip()):
            section = None
        elif section is not None and (kv := _KEY_VALUE.match(line.strip())):
            out.sections.setdefault(section, {}).setdefault(kv.group(1).strip(), kv.group(2).strip())
        _prolog_line(out, line)
    return out


def _strip_prefix(line: str) -> tuple[str, dt.datetime | None]:
    match = _PREFIX.match(line)
    if not match:
        return line, None
    stamp = match.group(1)
    return line[match.end():], dt.datetime.strptime(stamp, "%m/%d/%Y-%H:%M:%S") if stamp else None


def _version_from_int(v: int) -> str:
    """NV_TENSORRT_VERSION: major*1000 + minor*100 + patch up to 9.x (8601 -> 8.6.1), major*10000 + minor*100 +
    patch from 10.0 (101600 -> 10.16.0; 10.0.0 is 100000, above any 9.x)."""
    scale = 10000 if v >= 100000 else 1000
    return f"{v // scale}.{v % scale // 100}.{v % 100}"


def _legacy_line(out: Log, line: str) -> bool:
    """A line of 7.x's report (a block title or one of its `stat: value` lines); False for any other line."""
    if line in LEGACY_BLOCKS:
        out._legacy = line
        out.summary_lines.append(line)
        if line == "Host Latency":
            out.has_summary, out.format = True, FORMAT_7X
        return True
    match = _LEGACY_STAT.match(line) if out._legacy else None
    if not match:
        out._legacy = None
        return False
    stat, value, pct, e2e = match.group(1), number(match.group(2)), match.group(3), match.group(4)
    metric = LEGACY_BLOCKS[out._legacy]
    if stat in ("throughput", "walltime", "total compute time"):
        out.summary_lines.append(stat)
        attr = {"throughput": "throughput_qps", "walltime": "host_walltime_s",
                "total compute time": "gpu_compute_total_s"}[stat]
        setattr(out, attr, value)
        return True
    name = f"p{_pct(pct)}" if stat == "percentile" and pct else stat
    out.summary.setdefault(metric, {})[name] = value
    if e2e is not None:
        out.summary.setdefault("end_to_end", {})[name] = number(e2e)
    return True


def _profile_line(out: Log, line: str) -> None:
    """A row of the printed per-layer table; its column header says which layout it has."""
    if line.startswith("Time(ms)"):
        out._profile_layout = "numbers_first"
        return
    if line.startswith("Layer") and "Time" in line:
        out._profile_layout = "name_first_median" if "Median" in line else "name_first"
        return
    if out._profile_layout is None:
        return
    match = _PROFILE_ROW[out._profile_layout].match(line)
    if not match:
        return
    if out._profile_layout == "numbers_first":
        _, avg, median, _, name = match.groups()
    elif out._profile_layout == "name_first_median":
        name, _, avg, median, _ = match.groups()
    else:
        (name, _, avg, _), median = match.groups(), None
    if name != "Total":
        out.printed_profile.mean_ms[name] = number(avg)
        out.printed_profile.median_ms[name] = number(median) if median is not None else None


def _summary_line(out: Log, line: str) -> None:
    label, _, rest = line.partition(":")
    if label in SUMMARY_LINES:
        out.summary_lines.append(label)
    if label == "Throughput":
        out.throughput_qps = _first_number(rest)
    elif label == "Total Host Walltime":
        out.host_walltime_s = _first_number(rest)
    elif label == "Total GPU Compute Time":
        out.gpu_compute_total_s = _first_number(rest)
    elif label in METRICS:
        stats = {}
        for name, pct, value in _STAT.findall(rest):
            stats[f"p{_pct(pct)}" if pct else name] = number(value)
        out.summary[METRICS[label]] = stats


def _prolog_line(out: Log, line: str) -> None:
    match = re.match(rf"Warmup completed (\d+) queries over ({FLOAT}) ms", line)
    if match:
        out.warmup_queries, out.warmup_ms = int(match.group(1)), number(match.group(2))
    match = re.match(r"Timing trace has (\d+) queries over", line)
    if match:
        out.timed_queries = int(match.group(1))
    match = re.match(r"TensorRT version: (\d+\.\d+\.\d+|\d+)\s*$", line)
    if match:  # 8.3 and later print it dotted, 8.0-8.2 as NV_TENSORRT_VERSION (8003)
        text = match.group(1)
        out.version = text if "." in text else _version_from_int(int(text))
    match = re.match(r"Input inference shape\s*:\s*(.+)=([^=]*)$", line)
    if match:  # the name as trtexec took it apart: `x:0=4x1x28x28`
        out.inference_shapes.setdefault(match.group(1).strip(), match.group(2).strip())
    if line.startswith(E2E_NOT_REPORTED):
        out.e2e_not_reported = True
    match = re.match(r"The engine uses (\d+) auxiliary streams", line)
    if match:
        out.aux_streams = int(match.group(1))


def _first_number(text: str) -> float | None:
    match = re.search(FLOAT, text)
    return number(match.group(0)) if match else None


def _pct(text: str) -> str:
    value = number(text)
    return str(int(value)) if value.is_integer() else f"{value:g}"


def settings(log: Log) -> dict:
    """The settings a log states, as plain values (None where the log does not say: e.g. build options are not
    printed when trtexec loads an engine)."""
    build, infer = log.sections.get("Build Options", {}), log.sections.get("Inference Options", {})
    device = log.sections.get("Device Information", {})
    duration = re.match(rf"({FLOAT})s \(\+ ({FLOAT})ms warm up\)", infer.get("Duration", ""))
    workspace = re.search(rf"workspace: ({FLOAT}) MiB", build.get("Memory Pools", ""))
    return {
        # trtexec prints -1 for "not given". The optimization level then is TensorRT's default, 3. The number of
        # auxiliary streams is left to TensorRT's heuristic, which is not 0 ("forced to one stream"): it stays
        # -1, the value backend.max_aux_streams uses for "do not set it" (docs/tensorrt.md).
        "optimization_level": _default_minus_one(_int(build.get("BuilderOptimizationLevel")), 3),
        "max_aux_streams": _int(build.get("MaxAuxStreams")),
        "precision_flags": build.get("Precision"),
        "workspace_mb": number(workspace.group(1)) if workspace else None,
        "timing_cache_file": build.get("timingCacheFile") or None,
        "min_iterations": _int(infer.get("Iterations")),
        "duration_s": number(duration.group(1)) if duration else None,
        "warmup_ms": number(duration.group(2)) if duration else None,
        "streams": _int(infer.get("Inference Streams", infer.get("Streams"))),  # 7.x says Streams
        "cuda_graph": _enabled(infer.get("CUDA Graph")),
        "data_transfers": _enabled(infer.get("Data transfers")),
        "sync": {True: "spin", False: "blocking", None: None}[_enabled(infer.get("Spin-wait"))],
        "tf32": _tf32(log.command),
        "batch_size": batch_from_log(log),
        "gpu": device.get("Selected Device"),
        "compute_capability": device.get("Compute Capability"),
        "tensorrt": log.version,
    }


def _tf32(command: str | None) -> bool | None:
    """TF32 is a build option, on unless --noTF32; unknown when the log does not show a build."""
    args = (command or "").split()
    if not args or any(a.startswith("--loadEngine") for a in args):
        return None
    return "--noTF32" not in args


def batch_from_log(log: Log) -> int | None:
    """The batch of the first input: from trtexec's own "Input inference shape: x:0=4x1x28x28" lines, which show
    the name as trtexec split it, else from the command line."""
    for dims in log.inference_shapes.values():
        return _first_dim(dims)
    return batch_from_command(log.command)


def batch_from_command(command: str | None) -> int | None:
    """The batch of the first input in --shapes (inference) or --optShapes (build): 'x:8x3x224x224' -> 8.
    A name may hold ':' (TensorFlow's 'x:0', quoted or not): the dims are what follows the last ':'."""
    for flag in ("--shapes=", "--optShapes="):
        match = re.search(re.escape(flag) + r"((?:'[^']*'|[^\s,'])+)", command or "")
        if match:
            name, colon, dims = match.group(1).rpartition(":")
            return _first_dim(dims) if colon and name else None
    return None


def _first_dim(dims: str) -> int | None:
    match = re.fullmatch(r"(\d+)(?:x\d+)*", dims.strip())
    return int(match.group(1)) if match else None


def _int(text: str | None) -> int | None:
    return int(text) if text is not None and re.fullmatch(r"-?\d+", text.strip()) else None


def _default_minus_one(value: int | None, default: int) -> int | None:
    return default if value == -1 else value


def _enabled(text: str | None) -> bool | None:
    return {"Enabled": True, "Disabled": False}.get((text or "").strip())


# trtexec writes `"name" : "<name>"` with the name as it is, unescaped (sampleReporting.cpp): the name runs to the
# first quote that is followed by `, "timeMs" :` (--exportProfile) or ends the line (--exportOutput, one per line).
_NAME_FIELD = re.compile(r'("name"\s*:\s*")(.*?)("(?=\s*,\s*"timeMs"\s*:|\s*$))', re.MULTILINE)
_BARE_NUMBER = re.compile(r"(?<=[:\[,\s])(-?)(nan|inf)(?=[\s,\]}])")


def load_json(text: str) -> object:
    """JSON as trtexec writes it. C++ streams print inf and nan bare, which JSON has no words for, and names are
    written unescaped, so a `"` or `\\` in a layer or tensor name would end the string or start an escape. Each
    name is re-escaped (it is taken as written: trtexec never escapes), and the numbers outside names are fixed."""
    parts, at = [], 0
    for match in _NAME_FIELD.finditer(text):
        parts += [_bare_numbers(text[at:match.start(2)]), json.dumps(match.group(2))[1:-1]]
        at = match.end(2)
    parts.append(_bare_numbers(text[at:]))
    return json.loads("".join(parts))


def _bare_numbers(text: str) -> str:
    return _BARE_NUMBER.sub(lambda m: "NaN" if m.group(2) == "nan" else f"{m.group(1)}Infinity", text)


def parse_times(text: str) -> dict[str, list[float]]:
    """--exportTimes: one object per timed query (warm-up excluded) -> metric -> ms per query.

    trtexec writes every number with C++'s default 6 significant digits. The durations (computeMs, h2dMs, d2hMs,
    latencyMs) keep them; the enqueue time exists only as endEnqMs - startEnqMs of two absolute times, so it is
    quantised (to 1 us when the timestamps are in the hundreds of ms). The log's Enqueue Time line is exact."""
    queries = load_json(text)
    return {
        "gpu_compute": [q["computeMs"] for q in queries],
        "enqueue": [q["endEnqMs"] - q["startEnqMs"] for q in queries],
        "h2d": [q["h2dMs"] for q in queries],
        "d2h": [q["d2hMs"] for q in queries],
        "latency": [q["latencyMs"] for q in queries],
    }


@dataclass
class Profile:
    count: int                # profiled inferences
    mean_ms: dict[str, float]  # layer -> average time per inference, in engine order
    median_ms: dict[str, float | None] = field(default_factory=dict)  # layer -> median (None: not written)


def parse_profile(text: str) -> Profile:
    """--exportProfile: `[{"count": N}, {"name", "timeMs", "averageMs", "medianMs", "percentage"}, ...]`."""
    entries = load_json(text)
    count = next((int(e["count"]) for e in entries if "count" in e), 0)
    layers, medians = {}, {}
    for e in entries:
        if "name" in e:
            avg, median = e.get("averageMs"), e.get("medianMs")
            layers[e["name"]] = avg if avg is not None and math.isfinite(avg) else e["timeMs"] / max(count, 1)
            medians[e["name"]] = median if median is not None and math.isfinite(median) else None
    return Profile(count, layers, medians)


def parse_outputs(text: str, source: str = "--exportOutput") -> dict[str, np.ndarray]:
    """--exportOutput: `[{"name", "dimensions": "8x100", "values": [...]}, ...]`, one entry per output tensor
    (sampleReporting.cpp exportJSONOutput). The values are in logical row-major order, printed by C++ streams
    with 6 significant digits: a relative rounding of up to 5e-6 per value, the floor of any error measured this
    way (far below fp16's or int8's; an fp32 engine's rel_l2_err shows it)."""
    out = {}
    for entry in load_json(text):
        name, dims = entry["name"], str(entry.get("dimensions", "")).strip()
        shape = tuple(int(d) for d in dims.split("x")) if dims else ()
        values = np.asarray(entry["values"], dtype=np.float64)
        if values.size != math.prod(shape):
            raise ValueError(f"{source}: output '{name}' has {values.size} values for dimensions '{dims}'")
        out[name] = values.reshape(shape)
    return out


def read(path: str | Path | None) -> str | None:
    return Path(path).read_text(errors="replace") if path else None
