"""Seeded model inputs: the same draws for every backend and dtype."""
def test_seeded_inputs_cover_bf16_and_fp8():
    import ml_dtypes
    import numpy as np

    from stages.inputs import InputSpec, random_inputs

    base = random_inputs([InputSpec("x", (None, 4), np.dtype(np.float32))], 2, 7)["x"]
    for dtype in (ml_dtypes.bfloat16, ml_dtypes.float8_e4m3fn):
        x = random_inputs([InputSpec("x", (None, 4), np.dtype(dtype))], 2, 7)["x"]
        assert x.dtype == dtype and np.allclose(x.astype(np.float32), base, atol=0.2)  # the same draws, rounded
