"""trtexec backend: NVIDIA's command-line tool builds and times the engine with the same knobs as the tensorrt
backend, and its log and JSON exports are ingested into our tables (also by `python -m pipeline.ingest`)."""
