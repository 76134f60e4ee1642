"""The runs row never claims an opset the exported file does not have."""
import json

import onnx
import pandas as pd
import pytest

from pipeline import results
from tests.conftest import FAST, run_cli


def _file_opset(path) -> int:
    proto = onnx.load(str(path), load_external_data=False)
    return next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))


def _exported_opsets(cache_dir) -> dict[int, int]:
    """requested opset -> the opset in the cached export's file"""
    found = {}
    for manifest in (cache_dir / "entries").rglob("manifest.json"):
        spec = json.loads(manifest.read_text())["key_spec"]
        if spec["stage"] == "stages.export":
            found[spec["params"]["opset"]] = _file_opset(manifest.parent / "model.onnx")
    return found


@pytest.mark.slow
def test_opset_above_the_exporters_maximum_fails_with_the_range(workdir):
    newest = onnx.defs.onnx_opset_version()
    proc = run_cli(["export.opset=99", *FAST], workdir)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stdout + proc.stderr
    row = results.load(workdir / "outputs").runs.iloc[0]
    assert row.status == "failed"
    assert row.error.startswith("export: export.opset = 99:") and f"13-{newest}" in row.error, row.error
    assert _exported_opsets(workdir / "outputs/cache") == {}


@pytest.mark.slow
def test_recorded_opset_is_the_files(workdir):
    # tiny_cnn at 13 (torch 2.13, onnx 1.21): below torchlib's own opset 18, and the exporter cannot convert this
    # graph down, so the file has 18; at 18 it has what was asked
    proc = run_cli(["-m", "export.opset=13,18", "hydra.sweep.dir=sweep", *FAST], workdir)
    assert proc.returncode == 0, proc.stdout[-3000:]
    runs = results.load(workdir / "sweep").runs
    written = _exported_opsets(workdir / "outputs/cache")
    assert sorted(written) == [13, 18]
    by_request = {int(row.overrides.split("export.opset=")[1].split()[0]): row for _, row in runs.iterrows()}
    for requested, row in by_request.items():
        assert row.export_opset == written[requested], requested
        if written[requested] != requested:
            assert row.export_opset_requested == requested
        else:
            assert pd.isna(row.get("export_opset_requested"))
