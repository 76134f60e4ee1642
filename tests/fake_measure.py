"""An uncached measurement stage for orchestrator tests."""
from stages.api import StageResult

VERSION = "1"
CACHED = False
OUTPUTS = ()
PARAMS = {}


def environment(params):
    return {}


def run(inputs, params, out_dir):
    text = inputs["data"].read_text()
    return StageResult(info={"length": len(text)},
                       tables={"summary": [{"metric": "latency", "stat": "median", "value": float(len(text)),
                                            "unit": "ms"}],
                               "samples": {"trial": [0, 0], "iteration": [0, 1], "metric": ["latency"] * 2,
                                           "value_ms": [1.0, 2.0]}})
