"""The stage graph: parse the YAML mapping of nodes, validate it, and order it.

A node is `{stage: <module>, inputs: {name: "<node>.<output>"}, params: {...}, enabled: true}`, the stage named by its
import path (stages/api.py says what such a module declares). Validation names the offending node and key: a stage
that does not import or is no stage, a parameter it does not declare or refuses, an input that points at a missing
node or output, a cycle.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from graphlib import CycleError, TopologicalSorter
from typing import Any, Callable

from pipeline.config.schema import ConfigError
from stages.api import ParamError, check_params


class DagError(ConfigError):
    pass


# A node's name is a directory (<job>/stages/<name>) and a column prefix (<name>_seconds): a plain identifier.
NODE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class Node:
    name: str
    stage: str
    inputs: dict[str, tuple[str, str]] = field(default_factory=dict)  # input -> (upstream node, output)
    params: dict[str, Any] = field(default_factory=dict)
    enabled: bool = True
    # every param the stage takes, with its declaration (stages.api.Param): its PARAMS and the backend options it
    # takes; set by order()
    declared: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)


def parse(dag: dict[str, dict], *, where: str = "backend.dag") -> dict[str, Node]:
    if not isinstance(dag, dict):
        raise DagError(f"{where} = {dag!r}: expected a mapping of nodes")
    if not dag:
        raise DagError(f"{where} is empty: a backend needs at least one node")
    nodes = {}
    for name, spec in dag.items():
        if not isinstance(name, str) or not NODE_NAME.fullmatch(name):
            raise DagError(f"{where}: node name {str(name)!r} is not a plain identifier (letters, digits and _, "
                           f"not starting with a digit)")
        if not isinstance(spec, dict) or "stage" not in spec:
            raise DagError(f"{where}.{name}: a node needs `stage:` (and optional `inputs:`, `params:`)")
        inputs = {}
        for inp, ref in (spec.get("inputs") or {}).items():
            upstream, dot, output = str(ref).partition(".")
            if not dot or not upstream or not output:
                raise DagError(f"{where}.{name}.inputs.{inp} = '{ref}': expected '<node>.<output>', e.g. 'export.onnx'")
            inputs[inp] = (upstream, output)
        nodes[name] = Node(name, spec["stage"], inputs, dict(spec.get("params") or {}), bool(spec.get("enabled", True)))
    return nodes


def order(nodes: dict[str, Node], load: Callable[[str], Any], *, where: str = "backend.dag",
          declared: Callable[[Any], dict] | None = None) -> list[Node]:
    """Validate the graph and return its nodes in an order where every input is produced before it is read.

    `load(stage)` gives a stage's module (its OUTPUTS, PARAMS), or raises ValueError saying why it cannot;
    `declared(module)` the params it takes (default: its PARAMS), or raises ValueError.
    """
    modules = {}
    nodes = dict(nodes)
    for node in list(nodes.values()):
        try:
            modules[node.name] = load(node.stage)
            spec = declared(modules[node.name]) if declared else modules[node.name].PARAMS
        except ValueError as err:
            raise DagError(f"{where}.{node.name}.stage = '{node.stage}': {err}") from None
        try:
            check_params(spec, node.params, f"{where}.{node.name}.params")
        except ParamError as err:
            raise DagError(str(err)) from None
        nodes[node.name] = replace(node, declared=dict(spec))
    for node in nodes.values():
        for inp, (upstream, output) in node.inputs.items():
            ref = f"{where}.{node.name}.inputs.{inp} = '{upstream}.{output}'"
            if upstream not in nodes:
                raise DagError(f"{ref}: no node '{upstream}'; nodes: {', '.join(nodes)}")
            if node.enabled and not nodes[upstream].enabled:
                raise DagError(f"{ref}: node '{upstream}' is disabled (enabled: false), so it produces nothing")
            declared = tuple(modules[upstream].OUTPUTS)
            if output not in declared:
                raise DagError(f"{ref}: node '{upstream}' (stage {nodes[upstream].stage}) has no output "
                               f"'{output}'; it has: {', '.join(declared) or 'none'}")
    sorter = TopologicalSorter({n.name: {u for u, _ in n.inputs.values()} for n in nodes.values()})
    try:
        return [nodes[name] for name in sorter.static_order()]
    except CycleError as err:
        cycle = err.args[1]
        raise DagError(f"{where}: cycle between nodes {' -> '.join(cycle)}") from None
