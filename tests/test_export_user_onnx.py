"""model=onnx with a path that is no ONNX file at all: one clear line naming model.path."""
import pytest

from pipeline import results
from tests.conftest import FAST, run_cli


@pytest.mark.slow
@pytest.mark.parametrize("setup, words", [
    ("empty", ["model.path = 'given'", "is empty (0 bytes)"]),
    ("directory", ["model.path = 'given'", "is a directory"]),
])
def test_user_onnx_that_is_empty_or_a_directory(workdir, setup, words):
    if setup == "empty":
        (workdir / "given").write_bytes(b"")
    else:
        (workdir / "given").mkdir()
    proc = run_cli([*FAST, "model=onnx", "model.path=given"], workdir)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stdout + proc.stderr
    runs = results.load(workdir / "outputs").runs
    assert list(runs.status) == ["failed"]
    error = runs.error.iloc[0]
    assert error.startswith("export: ") and "\n" not in error
    for word in words:
        assert word in error, error
