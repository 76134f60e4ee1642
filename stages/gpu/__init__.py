"""GPU measurement shared by every backend: a cuda-python timing harness, NVML monitoring, an exclusive
per-GPU lock, and the table of dense peak throughputs."""
