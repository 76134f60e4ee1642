"""Run a validated DAG: each node through the artifact cache (or, for measurements, always), in order.

The runner knows stages only through the contract in stages/api.py; it knows no backend.
"""
from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import stages
from pipeline.config import renames
from pipeline.run import dag as dagmod
from pipeline.run import imports, isolation
from pipeline.run.cache import Cache, file_sha256
from stages import api

log = logging.getLogger(__name__)


@dataclass
class Isolation:
    """Which stages run in a child process. Artifact stages: `auto` those that declare CRASH_PRONE, `all`, or `none`.
    A measuring stage (not cached) unless `none`, where its `crash_prone(params)` says so (the backend's choice)."""
    mode: str = "auto"
    timeout_s: float | None = None

    def applies(self, module, params: dict | None = None) -> bool:
        if not module.CACHED:
            ask = getattr(module, "crash_prone", None)
            return self.mode != "none" and ask is not None and bool(ask(params or {}))
        return self.mode == "all" or (self.mode == "auto" and getattr(module, "CRASH_PRONE", False))


class StageFailed(Exception):
    """A node raised; carries the node name so the job's error says where."""

    def __init__(self, node: str, error: BaseException):
        super().__init__(f"{node}: {error}")
        self.node, self.error = node, error


@dataclass
class NodeOutcome:
    name: str
    stage: str
    seconds: float                              # its work: wall time less import_seconds
    cache: str                                  # hit | miss | off
    outputs: dict[str, Path] = field(default_factory=dict)
    digests: dict[str, str] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    tables: dict[str, Any] = field(default_factory=dict)
    import_seconds: float = 0.0                 # importing its module and what it imports on first use


def plan(dag: dict[str, dict], backend: dict | None = None) -> list[dagmod.Node]:
    """Parse and validate a DAG mapping (stages, their params, the edges); return its enabled nodes in run order.
    A stage that declares RUNTIME (the shared measuring stages: stages/runtime.py) is handed the backend's plugin
    and options as `plugin` and `options`; one that declares BACKEND_OPTIONS (a build) is handed those options as
    params of their own names, typed by the plugin's OPTIONS. So no backend's YAML wires them."""
    offered: dict = {}
    if backend is not None:
        dag = with_runtime(dag, backend)
        offered = _offered(backend) or {}
    nodes = dagmod.parse(dag)
    ordered = dagmod.order(nodes, stages.load, declared=lambda module: api.declared(module, offered))
    return [node for node in ordered if node.enabled]


def with_runtime(dag: dict[str, dict], backend: dict) -> dict[str, dict]:
    """`dag` with what the runner hands its stages from the backend: the plugin and options (RUNTIME), the
    options a stage takes (BACKEND_OPTIONS). A node that lists one of those itself is refused, naming the key."""
    from pipeline.run import plugins

    offered = _offered(backend)
    options = plugins.options(backend)
    out = {}
    for name, spec in dag.items():
        module = _load(spec.get("stage")) if isinstance(spec, dict) else None
        if module is not None and getattr(module, "RUNTIME", False):
            params = {**(spec.get("params") or {}), "plugin": backend.get("plugin"),
                      "options": plugins.options(backend)}
            spec = {**spec, "params": params}
        if module is not None and offered is not None and getattr(module, "BACKEND_OPTIONS", ()):
            try:
                takes = api.backend_options(module, offered)
            except ValueError as err:
                raise dagmod.DagError(f"backend.dag.{name}.stage = '{spec['stage']}': {err}") from None
            params = dict(spec.get("params") or {})
            listed = sorted(set(params) & set(takes))
            if listed:
                raise dagmod.DagError(
                    f"backend.dag.{name}.params.{listed[0]}: a backend option, which the runner hands to "
                    f"{spec['stage']} from backend.{listed[0]}: set backend.{listed[0]}, and remove it from the node")
            handed = api.with_implied(takes, {k: options[k] for k in takes if k in options})  # older configs: implied
            spec = {**spec, "params": {**params, **handed}}
        out[name] = spec
    return out


def _offered(backend: dict | None) -> dict | None:
    """The backend plugin's OPTIONS; None where there is no plugin to ask (plugins.check names the problem)."""
    from pipeline.config.schema import ConfigError
    from pipeline.run import plugins

    if not isinstance(backend, dict):
        return None
    try:
        return dict(plugins.plugin(backend).OPTIONS)
    except ConfigError:
        return None


def _load(stage):
    try:
        return stages.load(str(stage))
    except ValueError:  # not a stage: dagmod.order says so, naming the node
        return None


def keyed_dag(dag: dict[str, dict], backend: dict | None = None) -> dict[str, dict]:
    """The DAG as its stages receive it, without the params they declare keyed=False (for config_hash): a stage
    that takes backend options (BACKEND_OPTIONS) has them among its params, as the runner hands them over, so the
    hash is the one of a config whose YAML wired them (a recorded one); a stage that does not import keeps all of
    its params, but those renames.py says it had declared keyed=False."""
    from pipeline.run import plugins

    offered = _offered(backend) or {}
    options = plugins.options(backend) if isinstance(backend, dict) else {}
    out = {}
    for name, spec in dag.items():
        spec = dict(spec) if isinstance(spec, dict) else spec
        if not isinstance(spec, dict):
            out[name] = spec
            continue
        module = _load(spec.get("stage"))
        try:
            takes = api.backend_options(module, offered) if module is not None else {}
        except ValueError:  # the job fails in plan, naming it
            takes = {}
        if takes:
            spec["params"] = {**{k: options[k] for k in takes if k in options}, **(spec.get("params") or {})}
        if isinstance(spec.get("params"), dict):
            if module is not None:
                spec["params"] = api.keyed({**module.PARAMS, **takes}, spec["params"])
            else:  # a stage that has moved (an older record): what it had declared unkeyed
                gone = renames.unkeyed(str(spec.get("stage")))
                spec["params"] = {k: v for k, v in spec["params"].items() if k not in gone}
        out[name] = spec
    return out


def run(nodes: list[dagmod.Node], *, cache: Cache, work_dir: Path, on_start=None, on_done=None,
        isolate: Isolation | None = None) -> list[NodeOutcome]:
    """Run nodes in order. A node's exception is re-raised as StageFailed (stages.api.Unsupported too).

    A node's seconds are its work: the imports it makes (its module's first load in this process, before the
    job ran it, and for an artifact stage the libraries it imports on first use, in this process or its child)
    are its import_seconds. A measuring stage's first-use imports stay in its seconds: the clock's hook costs
    about 0.5 us per import statement, and a timed loop may run one per call (torch's eager call does)."""
    api.set_shared_root(cache.shared_root)
    done: dict[str, NodeOutcome] = {}
    for node in nodes:
        if on_start:
            on_start(node)
        try:
            module = stages.load(node.stage)  # outside the clock (the plan loaded it): a first load counts once
            loaded = stages.take_import_seconds(node.stage)
            started = time.perf_counter()
            with imports.clock() if module.CACHED else contextlib.nullcontext(imports.Clock()) as imported:
                outcome = _run_node(node, done, cache, work_dir, isolate or Isolation())
        except Exception as err:
            raise StageFailed(node.name, err) from err
        wall, in_child = time.perf_counter() - started, outcome.import_seconds
        outcome.seconds = max(wall - imported.seconds - in_child, 0.0)
        outcome.import_seconds = loaded + imported.seconds + in_child
        done[node.name] = outcome
        log.debug("%-10s %-4s %6.2fs", node.name, outcome.cache, outcome.seconds)
        if on_done:
            on_done(outcome)
    return list(done.values())


def _run_node(node: dagmod.Node, done: dict[str, NodeOutcome], cache: Cache, work_dir: Path,
              isolate: Isolation) -> NodeOutcome:
    module = stages.load(node.stage)
    inputs = {inp: done[up].outputs[out] for inp, (up, out) in node.inputs.items()}
    if not module.CACHED:
        out_dir = work_dir / "stages" / node.name
        out_dir.mkdir(parents=True, exist_ok=True)
        if isolate.applies(module, node.params):  # a crash or a poisoned GPU context ends with the child
            result = isolation.run_isolated(module.__name__, inputs, node.params, out_dir, isolate.timeout_s,
                                            cache.shared_root)
        else:
            result = module.run(inputs, node.params, out_dir)
        outputs = {name: out_dir / f for name, f in result.outputs.items()}
        return NodeOutcome(node.name, node.stage, 0.0, "off", outputs,
                           {name: file_sha256(p) for name, p in outputs.items()}, result.info, result.tables)

    key_spec = {
        "stage": node.stage,
        "version": module.VERSION,
        "params": api.keyed(node.declared or module.PARAMS, node.params),
        "inputs": {inp: done[up].digests[out] for inp, (up, out) in node.inputs.items()},
        "environment": module.environment(node.params) if hasattr(module, "environment") else {},
        "files": module.key_files(node.params) if hasattr(module, "key_files") else {},
        "extra": module.key_extra(node.params) if hasattr(module, "key_extra") else {},
    }

    in_child = [0.0]

    def build(out_dir: Path) -> dict:
        if isolate.applies(module, node.params):
            result = isolation.run_isolated(module.__name__, inputs, node.params, out_dir, isolate.timeout_s,
                                            cache.shared_root, imported=in_child)
        else:
            result = module.run(inputs, node.params, out_dir)
        # the build's tables describe the artifact: kept with it, so a hit reports them too
        return {"outputs": result.outputs, "info": result.info, "tables": result.tables}

    entry = cache.get_or_create(key_spec, build, scratch=work_dir / "artifacts", label=node.name)
    recorded = entry.manifest["info"]
    outputs = {name: entry.file(f) for name, f in recorded["outputs"].items()}
    if entry.outcome == "hit" and hasattr(module, "check_served"):
        module.check_served(outputs, node.params)
    digests = {name: entry.digest_of(f) for name, f in recorded["outputs"].items()}
    return NodeOutcome(node.name, node.stage, 0.0, entry.outcome, outputs, digests, recorded["info"],
                       recorded.get("tables") or {}, in_child[0])
