"""`python tests/fault_cli.py FAULT [pipeline args]`: the real CLI, killed with SIGKILL at one moment.

FAULT is `export` (while the export writes its artifact), `build` (while the build writes its artifact) or
`table` (between writing a job's runs table and moving it into place). It fires in the job whose
precision is $FAULT_PRECISION (all jobs if unset), as `kill -9` would: no cleanup, no handler runs.
"""
import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def die():
    os.kill(os.getpid(), signal.SIGKILL)


def main():
    fault, sys.argv = sys.argv[1], [sys.argv[0], *sys.argv[2:]]
    target = os.environ.get("FAULT_PRECISION")
    if fault == "export":
        from stages import export

        original = export._export_torch

        def export_then_die(model_cfg, seed, opset, out):
            original(model_cfg, seed, opset, out)
            die()  # the file is written, the cache entry is not complete
        export._export_torch = export_then_die
    elif fault == "build":
        from stages.onnxruntime import build

        original_build = build.run

        def build_then_die(inputs, params, out_dir):
            if target in (None, params["precision"]):
                (out_dir / build.FILE).write_bytes(b"half an engine")
                die()
            return original_build(inputs, params, out_dir)
        build.run = build_then_die
    elif fault == "table":
        real_replace = os.replace

        def replace_then_die(src, dst, *a, **kw):
            if str(dst).endswith("runs.parquet") and target in (None, _current_precision()):
                die()  # the temporary file is written, the final name is not
            return real_replace(src, dst, *a, **kw)
        os.replace = replace_then_die
    from pipeline.__main__ import main as pipeline_main

    pipeline_main()


def _current_precision():
    from hydra.core.hydra_config import HydraConfig

    try:
        return HydraConfig.get().runtime.choices.get("precision")
    except ValueError:
        return None


if __name__ == "__main__":
    main()
