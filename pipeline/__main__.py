"""`python -m pipeline [overrides]`: run the configured experiment (or a sweep) and record it.

Before Hydra composes the config, `backend=auto` (the default) is replaced by the best backend available on
this machine, so the choice is printed, lands in the recorded overrides, and a reproduction pins it.
"""
from __future__ import annotations

import sys

_NO_RESOLVE = ("--help", "-h", "--hydra-help", "--info", "--shell-completion", "-sc")


def resolve_backend(argv: list[str]) -> list[str]:
    if any(a in _NO_RESOLVE or a.startswith("--info") for a in argv):
        return argv
    given = [a for a in argv if a.lstrip("+~").split("=", 1)[0] == "backend"]
    if given and given[-1].split("=", 1)[1] != "auto":
        return argv
    from stages import availability

    name, passed = availability.best()
    why = f" (passed over: {'; '.join(passed)})" if passed else ""
    print(f"backend: auto -> {name}{why}", flush=True)
    return [a for a in argv if a not in given] + [f"backend={name}"]


def main() -> None:
    sys.argv[1:] = resolve_backend(sys.argv[1:])
    from pipeline import app

    app.hydra_main()
    sys.exit(1 if app.FAILED else 0)


if __name__ == "__main__":
    main()
