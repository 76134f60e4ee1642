"""A calibration .npz that does not fit the model is refused before any work (the export checks it against the
model's inputs), naming what is wrong."""
import numpy as np
import pytest

from pipeline import results
from tests.conftest import FAST, run_cli


@pytest.mark.slow
def test_calibration_array_of_the_wrong_shape_is_refused(workdir):
    np.savez(workdir / "calib.npz", input=np.zeros((16, 3, 16, 16), dtype=np.float32))  # tiny_cnn takes 3x32x32
    proc = run_cli(["model=tiny_cnn", "precision=int8", "convert.calibration.data=calib.npz", *FAST], workdir)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stdout + proc.stderr
    row = results.load(workdir / "outputs").runs.iloc[0]
    assert row.status == "failed" and row.error.startswith("export: convert.calibration.data = 'calib.npz'")
    for word in ("array 'input'", "(16, 3, 16, 16)", "(batch, 3, 32, 32)"):
        assert word in row.error, row.error
    assert not list((workdir / "outputs").rglob("error.txt"))  # refused as bad input, not an unexpected crash
