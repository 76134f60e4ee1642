"""`python -m pipeline [overrides]`: run the configured experiment (or a sweep) and record it.

Before Hydra composes the config, `backend=auto` (the default) is replaced by the best backend available on
this machine, so the choice is printed, lands in the recorded overrides, and a reproduction pins it.
"""
from __future__ import annotations

import os
import sys

_NO_RESOLVE = ("--help", "-h", "--hydra-help", "--info", "--shell-completion", "-sc")


def resolve_backend(argv: list[str]) -> list[str]:
    if any(a in _NO_RESOLVE or a.startswith("--info") for a in argv):
        return argv
    given = [a for a in argv if a.lstrip("+~").split("=", 1)[0] == "backend"]
    if given and given[-1].split("=", 1)[1] != "auto":
        return argv
    from pipeline import app, backends
    from stages.api import Unsupported

    try:
        name, passed = backends.best(app.CONF_DIR)
    except Unsupported as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
    why = f" (passed over: {'; '.join(passed)})" if passed else ""
    print(f"backend: auto -> {name}{why}", flush=True)
    return [a for a in argv if a not in given] + [f"backend={name}"]


def main() -> None:
    sys.argv[1:] = resolve_backend(sys.argv[1:])
    from pipeline import app, errors

    # Hydra reports a config it cannot compose in several lines, some with a traceback; with HYDRA_FULL_ERROR it
    # raises instead, and the user gets one line here. A user who set HYDRA_FULL_ERROR=1 still gets the traceback.
    wants_traceback = os.environ.get("HYDRA_FULL_ERROR") == "1"
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        app.hydra_main()
    except Exception as err:  # jobs never raise (they record a row): this is Hydra failing to compose or start
        if wants_traceback:
            raise
        print(f"error: {errors.one_line(err)}", file=sys.stderr)
        sys.exit(1)
    sys.exit(1 if app.FAILED else 0)


if __name__ == "__main__":
    main()
