"""Where the pipeline's own configs are: `CONF_DIR`, read by Hydra's entry point and by whatever lists them."""
from __future__ import annotations

from pathlib import Path


def _conf_dir() -> str:
    """The configs: inside the installed package (pipeline/conf), or conf/ beside pipeline/ in a checkout and
    an editable install. Absolute, so the CLI works from any working directory."""
    package = Path(__file__).resolve().parents[1]
    for candidate in (package / "conf", package.parent / "conf"):
        if (candidate / "config.yaml").is_file():
            return str(candidate)
    raise RuntimeError(f"the pipeline's configs are missing: neither {package / 'conf'} nor "
                       f"{package.parent / 'conf'} holds config.yaml; reinstall the package")


CONF_DIR = _conf_dir()
