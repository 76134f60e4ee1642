"""The job specification: a resolved config read once, at the start of a job, into the typed pieces the parts of
a job need (pipeline/run/job.py hands them out), so that no module digs dotted keys out of the whole tree.

`JobSpec.from_config` takes a config that schema.check passed. `Identity.of` reads what a `runs` row names (backend,
model, precision) from any config, one that failed to compose included.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pipeline import results
from pipeline.run import plugins, runner
from pipeline.run.cache import digest

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
