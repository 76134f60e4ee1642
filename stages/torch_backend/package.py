"""Where the build stage (build.py) leaves an AOTInductor package, and what it says about it (`build.json`)."""
from __future__ import annotations

import json
from pathlib import Path

FILE, PACKAGE = "build.json", "model.pt2"


def read(handle: Path) -> dict:
    """build.json, with `package` the package's path when there is one (`path: aoti`)."""
    meta = json.loads(Path(handle).read_text())
    if meta.get("path") == "aoti":
        meta["package"] = str(Path(handle).parent / PACKAGE)
    return meta
