# The pipeline with TensorRT (builder, Python bindings, trtexec) on NVIDIA's TensorRT container.
#
# NOT BUILT OR RUN HERE: this project has had no machine with Docker, an NVIDIA GPU or TensorRT. It follows NGC's
# documented layout (TensorRT's Python bindings for the system python3, trtexec in /usr/src/tensorrt/bin), and
# every step checks what it relies on, so a wrong assumption fails the build with a message, not later.
#
#   docker build -t trt-pipeline .            (--build-arg BASE=nvcr.io/nvidia/tensorrt:<tag>-py3 to pick one)
#   docker run --rm --gpus all -v $PWD/outputs:/workspace/trt-pipeline/outputs trt-pipeline \
#       python -m pipeline backend=tensorrt +sweep=precision
#   docker run --rm --gpus all trt-pipeline python -m pytest -q -m tensorrt tests/test_tensorrt_e2e.py
#
# Pick a recent tag from NGC (https://catalog.ngc.nvidia.com/orgs/nvidia/containers/tensorrt); its release
# notes say which TensorRT and CUDA it carries. The project needs Python >= 3.11 (Ubuntu 24.04 based tags).
ARG BASE=nvcr.io/nvidia/tensorrt:25.10-py3
FROM ${BASE}

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:/usr/src/tensorrt/bin:${PATH}

# Older tags ship the Python bindings as a setup script instead of installing them.
RUN python3 -c "import sys; assert sys.version_info >= (3, 11), f'Python {sys.version}: this project needs 3.11+; pick a newer tag'" \
 && (python3 -c "import tensorrt" 2>/dev/null || /opt/tensorrt/python/python_setup.sh) \
 && python3 -c "import tensorrt; print('TensorRT', tensorrt.__version__)" \
 && command -v trtexec

# A virtual environment that still sees the container's tensorrt (system site-packages), so pip never
# replaces NVIDIA's build with one from the public index.
RUN python3 -m venv --system-site-packages /opt/venv

WORKDIR /workspace/trt-pipeline
# Everything the package is built from (tests/test_dockerfile.py checks that these are enough to build it and to
# compose the default config), plus the tests and the example backend to run here.
COPY pyproject.toml setup.py README.md ./
COPY pipeline ./pipeline
COPY stages ./stages
COPY hydra_plugins ./hydra_plugins
COPY conf ./conf
COPY tests ./tests
COPY examples ./examples

# cuda-bindings must match the container's CUDA major (13.x needs a CUDA 13 driver); torch comes from the
# public index as a CUDA build. Then check that nothing shadowed the container's TensorRT.
RUN major="${CUDA_VERSION%%.*}"; major="${major:-12}" \
 && pip install "cuda-bindings>=12.6.1,<$((major + 1))" -e '.[test]' \
 && python -c "import tensorrt, polygraphy, cuda.bindings; print('tensorrt', tensorrt.__version__, 'at', tensorrt.__file__)"

CMD ["python", "-m", "pipeline", "backend=tensorrt"]
