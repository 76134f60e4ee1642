"""`python -m pipeline [overrides]`: run the configured experiment (or a sweep) and record it.

Before Hydra composes the config, `backend=auto` (the default) is replaced by the best backend available on
this machine, so the choice is printed, lands in the recorded overrides, and a reproduction pins it. And
`+search=<name>` gets the sweeper its config names (see resolve_search).
"""
from __future__ import annotations

import os
import sys

NOTHING_RAN_STATUS = 3  # no point failed, and none ran either: every one was unsupported here (a script can tell)
_NO_RESOLVE = ("--help", "-h", "--hydra-help", "--info", "--shell-completion", "-sc")


def resolve_backend(argv: list[str]) -> list[str]:
    if any(a in _NO_RESOLVE or a.startswith("--info") for a in argv):
        return argv
    given = [a for a in argv if a.lstrip("+~").split("=", 1)[0] == "backend"]
    if given and given[-1].split("=", 1)[1] != "auto":
        return argv
    if not given and any(override_in(group, argv, "/backend") for group in ("sweep", "search", "plan")):
        return argv  # a sweep, search or plan that names its backend (its defaults override /backend) keeps it
    from pipeline.config import paths
    from pipeline.run import plugins
    from stages.api import Unsupported

    try:
        name, passed = plugins.best(paths.CONF_DIR)
    except Unsupported as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
    why = f" (passed over: {'; '.join(passed)})" if passed else ""
    print(f"backend: auto -> {name}{why}", flush=True)
    return with_override([a for a in argv if a not in given], f"backend={name}")


def with_override(argv: list[str], override: str) -> list[str]:
    """`argv` with `override` beside the others: Hydra's parser takes the overrides as one run of positionals, so
    one added after a flag (`... --cfg job`) would be refused, and one put before `-m` would end the run early."""
    last = max((i for i, a in enumerate(argv) if "=" in a and not a.startswith("-")), default=len(argv) - 1)
    return [*argv[:last + 1], override, *argv[last + 1:]]


def resolve_search(argv: list[str]) -> list[str]:
    """`+search=optuna` picks a search sweeper: conf/search/optuna.yaml says `override /hydra/sweeper: optuna`.
    But conf/config.yaml overrides hydra/sweeper (to resilient) itself, and in Hydra's defaults list the first
    override of a group wins, so the search's would be ignored. A command-line override wins over both: the
    search's sweeper is added as one, unless the command line names a sweeper itself."""
    if any(a.lstrip("+").split("=", 1)[0] == "hydra/sweeper" for a in argv):
        return argv
    sweeper = override_in("search", argv, "/hydra/sweeper")
    if sweeper is None:
        return argv
    _require_sweeper(argv, sweeper)
    return with_override(argv, f"hydra/sweeper={sweeper}")


def override_in(group: str, argv: list[str], target: str) -> str | None:
    """What the option of `group` chosen on the command line (`+sweep=<name>`) overrides `target` with in its
    defaults list (`override /backend: <name>`), read from the packaged conf/<group>/<name>.yaml; None if nothing.
    A group option in a user's --config-dir is left to Hydra."""
    chosen = [a for a in argv if a.lstrip("+~").split("=", 1)[0] == group and "=" in a]
    if not chosen:
        return None
    from pathlib import Path

    import yaml

    from pipeline.config import paths

    try:
        spec = yaml.safe_load((Path(paths.CONF_DIR) / group / f"{chosen[-1].split('=', 1)[1]}.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return None
    defaults = spec.get("defaults") if isinstance(spec, dict) else None
    for entry in defaults or []:
        if isinstance(entry, dict) and len(entry) == 1:
            key, value = next(iter(entry.items()))
            if key.split() == ["override", target]:
                return value
    return None


def _require_sweeper(argv: list[str], sweeper: str) -> None:
    """Hydra's own answer to a missing sweeper plugin is a list of the sweepers it has; say what to install."""
    import importlib.util

    module = f"hydra_plugins.hydra_{sweeper}_sweeper"  # how Hydra's sweeper plugins are packaged
    try:
        found = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        search = next(a for a in argv if a.lstrip("+~").startswith("search="))
        print(f"error: {search} runs Hydra's {sweeper} sweeper, which is not installed ({module}); "
              f"pip install -e '.[search]' (or pip install hydra-{sweeper}-sweeper)", file=sys.stderr)
        sys.exit(1)


def main() -> None:
    sys.argv[1:] = resolve_search(resolve_backend(sys.argv[1:]))
    from pipeline.config import errors
    from pipeline.run import app

    # Hydra reports a config it cannot compose in several lines, some with a traceback; with HYDRA_FULL_ERROR it
    # raises instead, and the user gets one line here. A user who set HYDRA_FULL_ERROR=1 still gets the traceback.
    wants_traceback = os.environ.get("HYDRA_FULL_ERROR") == "1"
    os.environ["HYDRA_FULL_ERROR"] = "1"
    if any(a in ("--help", "-h", "--hydra-help") for a in sys.argv[1:]):
        app.share_listing_repository()
    app.install_sigterm()  # from the start: a SIGTERM while Hydra composes the sweep stops it cleanly too
    try:
        app.hydra_main()
    except Exception as err:  # jobs never raise (they record a row): this is Hydra failing to compose or start
        if wants_traceback:
            raise
        print(f"error: {errors.one_line(err)}", file=sys.stderr)
        sys.exit(1)
    sys.exit(1 if app.FAILED or app.STOPPED else NOTHING_RAN_STATUS if app.NOTHING_RAN else 0)


if __name__ == "__main__":
    main()
