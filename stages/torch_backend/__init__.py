"""PyTorch backend: model -> compile -> benchmark / validate. GPU timing through stages/gpu/harness.py,
CPU timing through stages/cpu_timing.py."""
