"""`hydra/sweeper=resilient` (the project's default): the grid of Hydra's basic sweeper (the cartesian product of
the comma-separated values of `hydra.sweeper.params` and the command line), except that a point whose config
cannot be composed (an unknown group option such as precision=fp9, a value of the wrong type, a broken YAML file)
becomes a `failed` row of its own instead of stopping the whole sweep before it starts.

Written on Hydra's public plugin API (`Sweeper`, the overrides parser, the launcher), not on the basic sweeper's
internals. Every point is composed once before launching: that is where a bad one is caught, recorded under
`<sweep dir>/invalid-<k>/`, and left out. The others run as usual, through whichever launcher is configured.
"""
# No `from __future__ import annotations`: Hydra's plugin scan imports this module in a way that dataclasses
# cannot resolve string annotations in.
import itertools
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from hydra.plugins.sweeper import Sweeper
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)


@dataclass
class ResilientSweeperConf:
    _target_: str = "hydra_plugins.pipeline_sweeper.resilient.ResilientSweeper"
    max_batch_size: Optional[int] = None  # points launched together (None: all of them)
    params: Optional[Dict[str, str]] = None  # key -> "v1,v2,...": the sweep a `conf/sweep/*.yaml` declares


ConfigStore.instance().store(group="hydra/sweeper", name="resilient", node=ResilientSweeperConf, provider="pipeline")


class ResilientSweeper(Sweeper):
    def __init__(self, max_batch_size: Optional[int] = None, params: Optional[Dict[str, str]] = None) -> None:
        super().__init__()
        self.max_batch_size = max_batch_size
        self.params = dict(params or {})
        self.invalid = 0  # points recorded as invalid so far in this sweep

    def setup(self, *, hydra_context, task_function, config: DictConfig) -> None:
        from hydra.core.plugins import Plugins

        self.hydra_context, self.config = hydra_context, config
        self.launcher = Plugins.instance().instantiate_launcher(hydra_context=hydra_context,
                                                                task_function=task_function, config=config)

    def sweep(self, arguments: List[str]) -> Any:
        points = self.grid([f"{k}={v}" for k, v in self.params.items()] + list(arguments))
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        from pipeline import results

        results.write_points(sweep_dir, points)  # the grid load() holds the rows against (points.json)
        size = self.max_batch_size or len(points) or 1
        returns, job_idx = [], 0
        for start in range(0, len(points), size):
            batch = [p for p in points[start:start + size] if self._composes(p)]
            if batch:
                returns.append(self.launcher.launch(batch, initial_job_idx=job_idx))
                job_idx += len(batch)
        return returns

    def grid(self, overrides: List[str]) -> List[List[str]]:
        """Every point of the sweep, as Hydra's basic sweeper orders them (a later override of a key wins)."""
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        axes: Dict[str, List[str]] = {}
        for override in parser.parse_overrides(overrides):
            key = override.get_key_element()
            if not override.is_sweep_override():
                axes[key] = [f"{key}={override.get_value_element_as_str()}"]
            elif override.is_discrete_sweep():
                axes[key] = [f"{key}={value}" for value in override.sweep_string_iterator()]
            else:
                raise HydraException(f"{key}: the resilient sweeper takes lists (a,b,c), choice() and range(); "
                                     f"for interval() use a search sweeper such as +search=optuna")
        return [list(point) for point in itertools.product(*axes.values())]

    def _composes(self, overrides: List[str]) -> bool:
        try:
            self.hydra_context.config_loader.load_sweep_config(master_config=self.config,
                                                               sweep_overrides=list(overrides))
            return True
        except Exception as err:  # noqa: BLE001 - any composition error belongs to this point only
            self._record(list(overrides), err)
            return False

    def _record(self, overrides: List[str], err: Exception) -> None:
        from pipeline import errors, job

        message = errors.one_line(err)
        out = Path(self.config.hydra.sweep.dir) / f"invalid-{self.invalid}"
        self.invalid += 1
        sweep = self.config.hydra.runtime.choices.get("sweep") or "multirun"
        job.record_invalid_point(out, job.JobMeta(sweep=sweep, overrides=overrides), message)
        log.error("point [%s] cannot be composed; recorded as failed in %s: %s", " ".join(overrides), out, message)
