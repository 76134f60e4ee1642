"""Errors from composing a config, as the one line a user reads: what is wrong, and what would be valid.

Hydra's own report of a composition error is several lines plus the config search path (this machine's paths),
and for some errors (a YAML tag PyYAML refuses, a broken file in a user's config dir) a traceback. The CLI and
the sweeper print this instead.
"""
from __future__ import annotations


def one_line(err: BaseException) -> str:
    """`err` and its cause on one line, without Hydra's search-path listing; an unknown key gets the valid keys."""
    text = str(err).strip() or type(err).__name__
    cause = err.__cause__ or err.__context__
    # OmegaConf's first line says what is wrong; the lines after it (full_key, object_type) repeat the key
    said = str(cause).strip().splitlines()[0] if cause is not None and str(cause).strip() else ""
    if said and said not in text:
        text += f": {said}"
    text = " ".join(text.split("Config search path")[0].split())
    valid = _valid_keys(cause if cause is not None else err)
    return f"{text} (valid keys there: {', '.join(valid)})" if valid else text


def _valid_keys(err: BaseException) -> list[str]:
    """For OmegaConf's 'Key ... not in ...' errors: the keys the node does have."""
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError

    parent = getattr(err, "parent_node", None)
    if not isinstance(err, (ConfigAttributeError, ConfigKeyError)) or parent is None:
        return []
    try:
        return sorted(str(k) for k in parent.keys())
    except Exception:  # noqa: BLE001 - a node that cannot list its keys: the message stays as it is
        return []
