"""Seeded model inputs: the same draws for every backend and dtype."""
def test_seeded_inputs_cover_bf16_and_fp8():
    import ml_dtypes
    import numpy as np

    from stages.inputs import InputSpec, random_inputs

    base = random_inputs([InputSpec("x", ("batch", 4), np.dtype(np.float32))], {"batch": 2}, 7)["x"]
    for dtype in (ml_dtypes.bfloat16, ml_dtypes.float8_e4m3fn):
        x = random_inputs([InputSpec("x", ("batch", 4), np.dtype(dtype))], {"batch": 2}, 7)["x"]
        assert x.dtype == dtype and np.allclose(x.astype(np.float32), base, atol=0.2)  # the same draws, rounded


def _npz(tmp_path, **arrays):
    import numpy as np

    np.savez(tmp_path / "calib.npz", **arrays)
    return str(tmp_path / "calib.npz")


def test_npz_shape_is_checked_past_the_batch_axis(tmp_path):
    import numpy as np
    import pytest

    from stages.api import StageInputError
    from stages.datasets import batches, check
    from stages.inputs import InputSpec

    spec = InputSpec("input", ("batch", 3, "width"), np.dtype(np.float32))  # a named axis: any size goes
    [(data, _, rows)] = batches(_npz(tmp_path, input=np.zeros((5, 3, 7), dtype=np.float64)), [spec], "k",
                                {"batch": 5}, 100)
    assert data["input"].shape == (5, 3, 7) and data["input"].dtype == np.float32 and rows == 5
    for shape in ((5, 4, 7), (5, 3), (5, 3, 7, 1)):
        path = _npz(tmp_path, input=np.zeros(shape, dtype=np.float32))
        with pytest.raises(StageInputError) as err:
            check(path, [spec], "convert.calibration.data")
        assert str(err.value) == (f"convert.calibration.data = '{path}': array 'input' has shape {shape}; "
                                  "the model's input needs (batch, 3, width), batch first")


def test_npz_float_data_for_an_int_input_is_refused(tmp_path):
    import numpy as np
    import pytest

    from stages.api import StageInputError
    from stages.datasets import batches, check
    from stages.inputs import InputSpec

    ids = InputSpec("ids", ("batch", 4), np.dtype(np.int64))
    [(data, _, _)] = batches(_npz(tmp_path, ids=np.ones((2, 4), dtype=np.int32)), [ids], "k", {"batch": 2}, 100)
    assert data["ids"].dtype == np.int64
    path = _npz(tmp_path, ids=np.ones((2, 4), dtype=np.float32))
    with pytest.raises(StageInputError, match=r"array 'ids' has dtype float32; the model's input takes int64"):
        check(path, [ids], "convert.calibration.data")
