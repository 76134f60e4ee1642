"""ONNX Runtime backend (CPU execution provider): build, benchmark and validate stages."""
