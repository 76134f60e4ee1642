"""The TorchScript fallback is for models the dynamo exporter cannot export, never for a transient environment
error: a disk-full export must fail the stage and leave no cache entry, or the fallback would be served as the
export from then on."""
import errno
import textwrap
import time

import pytest

from pipeline import results
from tests.conftest import FAST, run_cli

# The real CLI, with the dynamo exporter's file write failing as on a full disk.
DISK_FULL_CLI = textwrap.dedent("""
    import errno
    from torch.onnx._internal.exporter import _onnx_program

    def disk_full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    _onnx_program.ONNXProgram.save = disk_full
    from pipeline.__main__ import main
    main()
""")

# Data-dependent control flow: torch.export cannot capture it (TorchExportError), TorchScript tracing can.
DATA_DEPENDENT = textwrap.dedent("""
    import torch

    class Branchy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(4, 3)

        def forward(self, x):
            if x.sum() > 0:
                return self.fc(x)
            return -self.fc(x)

    def make():
        return Branchy()
""")


def _entries(workdir):
    return sorted((workdir / "outputs/cache/entries").rglob("manifest.json"))


@pytest.mark.slow
def test_disk_full_during_export_fails_and_caches_nothing(workdir):
    (workdir / "disk_full_cli.py").write_text(DISK_FULL_CLI)
    proc = run_cli(FAST, workdir, module="disk_full_cli")
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    row = results.load(workdir / "outputs").runs.iloc[0]
    assert row.status == "failed" and row.error.startswith("export: OSError"), row.error
    assert "No space left on device" in row.error
    assert "export_exporter" not in row or row.export_exporter != "torchscript"
    assert _entries(workdir) == []  # nothing cached under the normal key
    time.sleep(1)  # a new run directory (they are named by the second)
    proc = run_cli(FAST, workdir)
    assert proc.returncode == 0, proc.stdout[-3000:]
    row = results.load(workdir / "outputs/runs").runs.sort_values("started").iloc[-1]
    assert (row.status, row.export_cache, row.export_exporter) == ("ok", "miss", "dynamo")


@pytest.mark.slow
def test_model_the_dynamo_exporter_cannot_capture_falls_back(workdir):
    (workdir / "branchy.py").write_text(DATA_DEPENDENT)
    proc = run_cli(["model=factory", "model._target_=branchy.make", "model.input_shape=[4]", *FAST], workdir)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    row = results.load(workdir / "outputs").runs.iloc[0]
    assert (row.status, row.export_exporter) == ("ok", "torchscript")
    assert row.export_dynamo_error.startswith("TorchExportError")


def test_only_exporter_errors_fall_back():
    pytest.importorskip("torch")
    from torch.onnx._internal.exporter import _errors

    from stages.export import _exporter_cannot

    assert _exporter_cannot(_errors.TorchExportError("cannot capture"))
    from torch._dynamo import exc as dynamo_exc

    assert _exporter_cannot(dynamo_exc.Unsupported("data-dependent"))
    assert not _exporter_cannot(OSError(errno.ENOSPC, "No space left on device"))
    assert not _exporter_cannot(MemoryError())
    assert not _exporter_cannot(ValueError("a bug of ours"))
    for environment in (OSError(errno.ENOSPC, "No space left on device"), MemoryError()):
        try:  # the exporter wraps what went wrong inside it; the cause decides
            raise _errors.ConversionError("translation failed") from environment
        except _errors.ConversionError as wrapped:
            assert not _exporter_cannot(wrapped)
