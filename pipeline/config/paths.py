"""Where the configs are: the pipeline's own (`CONF_DIR`, read by Hydra's entry point and by whatever lists them),
and those of the backends other installed packages declare (`installed_backends`, `installed_conf`: the project's
Hydra search path plugin, hydra_plugins/pipeline_backends, puts them on the search path)."""
from __future__ import annotations

from dataclasses import dataclass
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


# ---------------------------------------------------------------- backends of other installed packages

ENTRY_POINTS = "trt_pipeline.backends"
"""The entry-point group of installed backends: `<name> = <plugin module>` (pyproject.toml:
`[project.entry-points."trt_pipeline.backends"]`), where `backend=<name>` composes `backend/<name>.yaml` from the
package's configs (`<plugin package>/conf/`, or the directory or `pkg://` path its `CONF_DIR` names)."""


@dataclass(frozen=True)
class Installed:
    name: str          # backend=<name>
    plugin: str        # the plugin module the entry point names
    distribution: str  # the installed distribution that declares it


def installed_backends() -> list[Installed]:
    """The backends other installed distributions declare, read from their metadata (nothing is imported); the
    first of two that take one name wins, as on Hydra's search path."""
    from importlib.metadata import entry_points

    found: dict[str, Installed] = {}
    for ep in entry_points(group=ENTRY_POINTS):
        dist = getattr(ep, "dist", None)
        found.setdefault(ep.name, Installed(ep.name, ep.module, dist.name if dist is not None else "?"))
    return list(found.values())


def installed_conf(backend: Installed) -> str | None:
    """Where `backend`'s configs are, as a Hydra search path entry: `file://<its package>/conf` when that holds
    `backend/<name>.yaml` (found without importing the plugin), else its plugin's `CONF_DIR` (a directory, or a
    `pkg://` or `file://` path), which imports it. None when neither says."""
    import importlib
    import importlib.util

    try:
        spec = importlib.util.find_spec(backend.plugin)
    except (ImportError, ValueError):
        spec = None
    for location in (spec.submodule_search_locations or []) if spec else []:
        conf = Path(location) / "conf"
        if (conf / "backend" / f"{backend.name}.yaml").is_file():
            return f"file://{conf}"
    try:
        declared = getattr(importlib.import_module(backend.plugin), "CONF_DIR", None)
    except Exception:  # noqa: BLE001 - a plugin that does not import says why when it is used, not here
        return None
    if declared is None:
        return None
    declared = str(declared)
    return declared if "://" in declared else f"file://{Path(declared).resolve()}"
