"""The job specification: a resolved config read once, at the start of a job, into the typed pieces the parts of
a job need (pipeline/run/job.py hands them out), so that no module digs dotted keys out of the whole tree.

`JobSpec.from_config` takes a config that schema.check passed. `Identity.of` reads what a `runs` row names (backend,
model, precision) from any config, one that failed to compose included; `row_values` the rest of the row's config
columns, and `Control.of` what the CLI's glue (pipeline/run/app.py) needs around a job, from any resolved config.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pipeline import results
from pipeline.config import schema
from pipeline.run import plugins, runner
from pipeline.run.cache import digest
from stages import sources

# The one notion of "never changes a result": these top-level keys, the backend options and stage params declared
# keyed=False (stages.api.Param). All are left out of config_hash, as they are out of every cache key, so a moved
# cache, other output dirs or isolation settings, or a reproduction hash the same.
# They are no runs columns and no swept axes either (pipeline/analysis/sweeps.py swept_values; results.point_key).
NEVER_CHANGES_RESULT = results.NEVER_CHANGES_RESULT


def identity_hash(config: dict) -> str:
    """A job's config_hash: what decides its results, the config without what never changes one (see
    NEVER_CHANGES_RESULT); a backend's nodes hashed with the options their stages take (runner.keyed_dag)."""
    kept = {k: v for k, v in config.items() if k not in NEVER_CHANGES_RESULT}
    backend = kept.get("backend")
    if isinstance(backend, dict) and backend.get("plugin"):
        keyed = plugins.keyed_options(backend)
        kept["backend"] = {k: v for k, v in backend.items() if k in plugins.RESERVED or k in keyed}
        kept["backend"]["dag"] = runner.keyed_dag(backend.get("dag") or {}, backend)
    return digest(kept)


def _section(config: Any, key: str) -> dict:
    value = config.get(key) if isinstance(config, dict) else None
    return value if isinstance(value, dict) else {}


@dataclass(frozen=True)
class Identity:
    """What a job is, as its `runs` row names it; None where the config does not say (it failed to compose)."""
    backend: str | None
    model: str | None
    precision: str | None

    @classmethod
    def of(cls, config: Any) -> Identity:
        precision = _section(config, "precision").get("name")
        return cls(_section(config, "backend").get("name"), _section(config, "model").get("name"),
                   None if precision is None else str(precision))


# Override keys that are no runs column of their own: group choices (named by the row's backend, model, precision
# columns) and Hydra's settings; with NEVER_CHANGES_RESULT and results.CONFIG_COLUMNS (columns already).
_GROUPS = ("model", "backend", "precision", "sweep", "hydra", "axes")


def row_values(config: Any, overrides: list[str]) -> dict[str, Any]:
    """The `runs` row's columns from a config (any config: one that failed to compose or the checks included) besides
    the identity: the config columns (results.CONFIG_COLUMNS), model_id, axes_<name>, the backend's scalar options,
    and each other overridden scalar under its dotted key with `_` for `.` (a column where its type allows)."""
    row: dict[str, Any] = {}
    for key, column in results.CONFIG_COLUMNS.items():
        value = schema.lookup(config, key)
        if value is not None and results.fits_column("runs", column, value):  # absent, not None: a null (or a
            row[column] = value  # mistyped value, which the checks then refuse by name) would break the table
    if _section(config, "model").get("source"):
        row["model_id"] = sources.model_id(config["model"])
    row.update({f"axes_{axis}": size for axis, size in (_section(config, "axes") or {}).items()})
    for key, value in plugins.options(_section(config, "backend")).items():
        if isinstance(value, (bool, int, float, str)) and key not in row and results.fits_column("runs", key, value):
            row[key] = value
    for override in overrides:
        key = override.lstrip("+~").partition("=")[0]
        if key.split(".")[0] in _GROUPS + NEVER_CHANGES_RESULT or key in results.CONFIG_COLUMNS:
            continue
        value = schema.lookup(config, key)
        if isinstance(value, (bool, int, float, str)) and results.fits_column("runs", key.replace(".", "_"), value):
            row.setdefault(key.replace(".", "_"), value)
    return row


@dataclass(frozen=True)
class Control:
    """What runs around a job (pipeline/run/app.py), read from any resolved config: whether resume may keep an
    earlier result, the rule the job's objective is judged by (select.*), where the artifact cache lies."""
    resume: bool
    select: dict | None
    cache_dir: str

    @classmethod
    def of(cls, config: Any) -> Control:
        select = config.get("select") if isinstance(config, dict) else None
        return cls(bool(config.get("resume")) if isinstance(config, dict) else False,
                   select if isinstance(select, dict) else None, str(_section(config, "cache").get("dir") or ""))


@dataclass(frozen=True)
class CacheSettings:
    dir: str
    enabled: bool
    verify: str


@dataclass(frozen=True)
class IsolationSettings:
    mode: str
    timeout_s: float


@dataclass(frozen=True)
class Measurement:
    """The measuring stages' settings (the DAG's nodes carry them as params; here for what reads them whole)."""
    benchmark: dict
    profile: dict
    validate: dict


@dataclass(frozen=True)
class JobSpec:
    identity: Identity
    config_hash: str          # the job's identity in the tables (a reproduced record's own, where given)
    backend: dict             # the backend's node: name, plugin, artifact and its options (typed by its plugin)
    dag: dict                 # backend.dag: the nodes, their stages, inputs and params
    cache: CacheSettings
    isolation: IsolationSettings
    gpu_pin: str
    measurement: Measurement

    @property
    def options(self) -> dict:
        return plugins.options(self.backend)

    @classmethod
    def from_config(cls, config: dict, config_hash: str | None = None) -> JobSpec:
        """The spec of a checked config (schema.check); `config_hash`: the identity to record, if not its own."""
        if config_hash is None:
            config_hash = identity_hash(config)
        backend = config["backend"]
        return cls(
            identity=Identity.of(config), config_hash=config_hash, backend=backend, dag=backend.get("dag") or {},
            cache=CacheSettings(str(config["cache"]["dir"]), bool(config["cache"]["enabled"]),
                                str(config["cache"]["verify"])),
            isolation=IsolationSettings(str(config["isolation"]["mode"]), float(config["isolation"]["timeout_s"])),
            gpu_pin=gpu_pin(config),
            measurement=Measurement(dict(config["benchmark"]), dict(config["profile"]), dict(config["validate"])))


def gpu_pin(config: Any) -> str:
    """gpu.pin of any config ("auto" where it does not say): read before the checks, the environment needs it."""
    return str(_section(config, "gpu").get("pin") or "auto")
