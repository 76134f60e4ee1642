"""The environment a job ran in, for the `runs` table and for reproduce's diff. Cheap: no framework imports."""
from __future__ import annotations

import functools
import platform
import subprocess
from pathlib import Path

from stages import host
from stages.gpu import session

PROJECT_ROOT = Path(__file__).resolve().parent.parent


@functools.lru_cache(maxsize=1)
def capture() -> dict[str, str | None]:
    env = {
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
        "cpu": host.cpu_identity()["cpu"],
        **host.software_versions(),
        "git_commit": _git_commit(),
    }
    env.update(session.identity())  # the GPU the stages measure on, matched by CUDA UUID
    return env


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(PROJECT_ROOT), "describe", "--always", "--dirty", "--abbrev=40"],
                             capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None
