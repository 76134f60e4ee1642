"""ONNX Runtime's execution providers as `backend.provider`: the execution provider (EP) a name means, whether it
can run here, the options its sessions get, and the precisions it refuses.

onnxruntime-gpu lists CUDAExecutionProvider and TensorrtExecutionProvider in `get_available_providers()` on any
machine, GPU or not, and a session asked for one that cannot load (no GPU, no CUDA, cuDNN or TensorRT libraries)
logs an error and runs on the CPU provider instead. So whether a GPU provider runs here is decided by an NVML count
of the GPUs and then by what the session really got (`session.get_providers()`): a session that fell back is
`Unsupported`, never measured as the provider it was asked for.
"""
from __future__ import annotations

from stages.api import Unsupported

NAMES = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}
GPU = ("cuda", "tensorrt")  # timed by the GPU harness (stages/onnxruntime/opened.py)
DEVICE_ID = 0  # CUDA device 0 of this process, as stages/gpu/session.py measures on
# The TensorRT provider's switch that lets TensorRT pick kernels of the precision the converted graph is in: without
# it, TensorRT may compute an fp16 graph's layers in fp32 (its precision flags allow kernels; not checked on a GPU).
TRT_PRECISION = {"fp16": "trt_fp16_enable", "bf16": "trt_bf16_enable", "int8": "trt_int8_enable"}
HOW_TO_GET = {
    "cuda": "The CUDA provider needs onnxruntime-gpu in place of onnxruntime "
            "(`pip install onnxruntime-gpu[cuda,cudnn]` brings the CUDA and cuDNN libraries it was built for: CUDA 13 "
            "and cuDNN 9 for 1.31) and an NVIDIA GPU.",
    "tensorrt": "The TensorRT provider needs what the CUDA provider needs (`pip install onnxruntime-gpu[cuda,cudnn]`, "
                "an NVIDIA GPU) and TensorRT's libraries (libnvinfer: `pip install tensorrt`, or the NGC TensorRT "
                "container) where the loader finds them.",
}


def refusal(provider: str, precision: str, tf32: bool) -> str | None:
    """Why `precision` cannot be asked of this provider (None: it can). TF32 is a GPU math mode; TensorRT's
    provider cannot turn it off (its builder's TF32 is on by default and the EP has no switch for it:
    microsoft/onnxruntime#26029), so it cannot give plain fp32."""
    if provider == "cpu" and tf32:
        return (f"precision={precision}: TF32 is a tensor-core math mode of NVIDIA GPUs; onnxruntime's "
                f"{NAMES['cpu']} computes in plain fp32 (use precision=fp32, or backend.provider=cuda)")
    if provider == "tensorrt" and precision == "fp32":
        return ("precision=fp32 on backend.provider=tensorrt: ONNX Runtime's TensorRT provider leaves TensorRT's "
                "TF32 on and has no option to clear it, so it cannot compute in plain fp32 (use precision=tf32, "
                "or backend.provider=cuda, whose use_tf32 is set from the precision)")
    if provider == "tensorrt" and precision not in TRT_PRECISION and precision != "tf32":
        return (f"precision={precision} on backend.provider=tensorrt: ONNX Runtime's TensorRT provider has no "
                f"switch that lets TensorRT use {precision} kernels (it has {', '.join(TRT_PRECISION.values())})")
    return None


def provider_options(provider: str, precision: str | None, tf32: bool, stream: int | None = None) -> dict:
    """The options its sessions get. CUDA: `use_tf32` from the precision (ORT's default is on, which would make fp32
    TF32). TensorRT: the switch for the precision's kernels (TRT_PRECISION). A `stream` (cudaStream_t as an int)
    becomes the provider's compute stream, `user_compute_stream` (ORT sets has_user_compute_stream from it), so the
    harness's CUDA events around a run on that stream time the run's kernels."""
    if provider == "cpu":
        return {}
    options = {"device_id": str(DEVICE_ID)}
    if provider == "cuda":
        options["use_tf32"] = "1" if tf32 else "0"
    if provider == "tensorrt" and precision in TRT_PRECISION:
        options[TRT_PRECISION[precision]] = "True"
    if stream is not None:
        options["user_compute_stream"] = str(int(stream))
    return options


def session_providers(provider: str, precision: str | None, tf32: bool, stream: int | None = None) -> list:
    """The `providers` argument of an InferenceSession for this provider."""
    if provider == "cpu":
        return [NAMES["cpu"]]
    return [(NAMES[provider], provider_options(provider, precision, tf32, stream))]


def check_here(provider: str) -> None:
    """Unsupported, with how to get it, where this provider cannot run: the package lacks it, or there is no GPU.
    A GPU that is there is readied: CUDA and cuDNN from pip's nvidia packages are loaded (ORT's preload_dlls)."""
    if provider == "cpu":
        return
    import onnxruntime as ort

    from stages import availability

    if NAMES[provider] not in ort.get_available_providers():
        raise Unsupported(f"backend.provider={provider}: this onnxruntime ({ort.__version__}) has no "
                          f"{NAMES[provider]}. {HOW_TO_GET[provider]}")
    if not availability.gpu_count():
        raise Unsupported(f"backend.provider={provider}: no NVIDIA GPU found (NVML); onnxruntime would fall back to "
                          f"the CPU. {HOW_TO_GET[provider]}")
    if hasattr(ort, "preload_dlls"):  # onnxruntime >= 1.21
        ort.preload_dlls()


def check_got(sess, provider: str) -> None:
    """Unsupported unless the session runs on the provider asked for (ORT falls back to the CPU silently)."""
    got = list(sess.get_providers())
    if NAMES[provider] not in got:
        raise Unsupported(f"backend.provider={provider}: onnxruntime could not start {NAMES[provider]} and fell back "
                          f"to {', '.join(got) or 'nothing'} (its log says why: missing CUDA, cuDNN or TensorRT "
                          f"libraries?). {HOW_TO_GET[provider]}")
