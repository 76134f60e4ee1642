"""`pip install <a backend's package>` then `backend=<name>`, without --config-dir: every backend another installed
distribution declares in the `trt_pipeline.backends` entry-point group (pipeline/config/paths.py) has its config
directory appended to the pipeline's search path, after the pipeline's own configs and the user's --config-dir (so
those win a name they share).

Hydra runs every search path plugin for every Hydra app of the environment: this one touches only the pipeline's
(its primary config directory is the pipeline's), and costs one read of the installed distributions' entry points;
a plugin module is imported only if its package has no `conf/` of its own (it then names one in `CONF_DIR`).
"""
from __future__ import annotations

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin

PROVIDER = "trt-pipeline-backend"


class InstalledBackendsSearchPath(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        try:
            from pipeline.config import paths

            if not _is_the_pipelines(search_path, paths.CONF_DIR):
                return
            for backend in paths.installed_backends():
                where = paths.installed_conf(backend)
                if where is not None:
                    search_path.append(provider=f"{PROVIDER}:{backend.distribution}", path=where)
        except Exception:  # noqa: BLE001 - never break Hydra for every app: a backend it misses says so when named
            return


def _is_the_pipelines(search_path: ConfigSearchPath, conf_dir: str) -> bool:
    from pathlib import Path

    def resolved(path: str) -> Path | None:
        if path.startswith("pkg://") or path.startswith("structured://"):
            return None
        return Path(path.removeprefix("file://")).resolve()

    return any(resolved(e.path) == Path(conf_dir).resolve() for e in search_path.get_path() if e.path)
