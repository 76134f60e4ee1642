"""What trtexec writes, parsed: its log and its JSON exports.

Formats follow NVIDIA/TensorRT's samples/common (sampleReporting.cpp, sampleOptions.cpp, logging.h) at 10.x and
11.x:
- Log lines start `[MM/DD/YYYY-HH:MM:SS] [I] ` (W, E, V for the other severities); the first and last lines are
  `&&&& RUNNING|PASSED|FAILED TensorRT.trtexec [TensorRT v110100] [b106] # trtexec --onnx=...`.
- Options and device facts come in blocks (`=== Build Options ===`, `=== Inference Options ===`,
  `=== Device Information ===` ...) of `Key: value` lines.
- `=== Performance summary ===` then `Throughput: <f> qps`, one line per metric (`Latency: min = <f> ms,
  max = ..., mean = ..., median = ..., percentile(90%) = <f> ms, ...`; likewise `Enqueue Time`, `H2D Latency`,
  `GPU Compute Time`, `D2H Latency`), `Total Host Walltime: <f> s`, `Total GPU Compute Time: <f> s`.
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
_PREFIX = re.compile(r"^\[(\d{2}/\d{2}/\d{4}-\d{2}:\d{2}:\d{2})\] \[([A-Z])\] ?")
_BANNER = re.compile(r"&&&& (\w+) TensorRT\.trtexec \[TensorRT v(\d+)\](?: \[b\d+\])? # (.*)$")
_HEADER = re.compile(r"^=== (.+?) ===$")
_KEY_VALUE = re.compile(r"^([A-Za-z][^:]*?):\s*(.*)$")
_STAT = re.compile(rf"(min|max|mean|median|percentile\(({FLOAT})%\)) = ({FLOAT}) ms", re.IGNORECASE)
SUMMARY = "Performance summary"
# trtexec's metric labels -> our metric names (the same as the GPU harness's)
METRICS = {"Latency": "latency", "Enqueue Time": "enqueue", "H2D Latency": "h2d", "GPU Compute Time": "gpu_compute",
           "D2H Latency": "d2h"}
# Every line of the block, in the order trtexec prints them (sampleReporting.cpp, 8.6 to 11.1 alike): a log that
# lacks one was cut inside the block, and its statistics are partial.
SUMMARY_LINES = ("Throughput", "Latency", "Enqueue Time", "H2D Latency", "GPU Compute Time", "D2H Latency",
                 "Total Host Walltime", "Total GPU Compute Time")
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

    @property
    def major(self) -> int | None:
        return int(self.version.split(".")[0]) if self.version else None

    @property
    def missing_summary_lines(self) -> list[str]:
        return [label for label in SUMMARY_LINES if label not in self.summary_lines]

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


def parse_log(text: str) -> Log:
    out = Log()
    section = None
    for raw in text.splitlines():
        line, stamp = _strip_prefix(raw.rstrip())
        if stamp:
            out.started = out.started or stamp
            out.ended = stamp
        banner = _BANNER.search(line)
        if banner:
            out.result = None if banner.group(1) == "RUNNING" else banner.group(1)
            out.command = banner.group(3).strip()
            out.version = out.version or _version_from_int(int(banner.group(2)))
            continue
        header = _HEADER.match(line.strip())
        if header:
            section = header.group(1)
            out.has_summary = out.has_summary or section == SUMMARY
            continue
        if not line.strip():
            section = None
            continue
        if line.startswith("* "):
            out.warnings.append(line[2:].strip())
        elif section == SUMMARY:
            _summary_line(out, line)
        elif section is not None and (kv := _KEY_VALUE.match(line.strip())):
            out.sections.setdefault(section, {}).setdefault(kv.group(1).strip(), kv.group(2).strip())
        _prolog_line(out, line)
    return out


def _strip_prefix(line: str) -> tuple[str, dt.datetime | None]:
    match = _PREFIX.match(line)
    if not match:
        return line, None
    return line[match.end():], dt.datetime.strptime(match.group(1), "%m/%d/%Y-%H:%M:%S")


def _version_from_int(v: int) -> str:
    return f"{v // 10000}.{v // 100 % 100}.{v % 100}"  # NV_TENSORRT_VERSION = major*10000 + minor*100 + patch


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
    match = re.match(r"TensorRT version: (\d+\.\d+\.\d+)", line)
    if match:
        out.version = match.group(1)
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
        "streams": _int(infer.get("Inference Streams")),
        "cuda_graph": _enabled(infer.get("CUDA Graph")),
        "data_transfers": _enabled(infer.get("Data transfers")),
        "sync": {True: "spin", False: "blocking", None: None}[_enabled(infer.get("Spin-wait"))],
        "tf32": _tf32(log.command),
        "batch_size": batch_from_command(log.command),
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


def batch_from_command(command: str | None) -> int | None:
    """The batch of the first input in --shapes (inference) or --optShapes (build): 'x:8x3x224x224' -> 8."""
    for flag in ("--shapes=", "--optShapes="):
        match = re.search(re.escape(flag) + r"(?:'[^']*'|[^:\s,]+):(\d+)", command or "")
        if match:
            return int(match.group(1))
    return None


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
