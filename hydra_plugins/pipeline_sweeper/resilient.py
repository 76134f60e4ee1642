"""`hydra/sweeper=resilient` (the project's default): Hydra's basic sweeper, except that a point whose config
cannot be composed (an unknown group option such as precision=fp9, a value of the wrong type) becomes a
`failed` row of its own instead of stopping the whole sweep before it starts.

Hydra composes every point of a batch before launching it; that check is where such a point is caught,
recorded under `<sweep dir>/invalid-<k>/`, and taken out of the batch. The other points run as usual.
"""
# No `from __future__ import annotations`: Hydra's plugin scan imports this module in a way that dataclasses
# cannot resolve string annotations in.
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper, BasicSweeperConf
from hydra.core.config_store import ConfigStore

log = logging.getLogger("pipeline")


@dataclass
class ResilientSweeperConf(BasicSweeperConf):
    _target_: str = "hydra_plugins.pipeline_sweeper.resilient.ResilientSweeper"


ConfigStore.instance().store(group="hydra/sweeper", name="resilient", node=ResilientSweeperConf, provider="pipeline")


class ResilientSweeper(BasicSweeper):
    invalid = 0  # points recorded as invalid so far in this sweep

    def validate_batch_is_legal(self, batch: Sequence[Sequence[str]]) -> None:
        for overrides in list(batch):
            try:
                self.hydra_context.config_loader.load_sweep_config(master_config=self.config,
                                                                   sweep_overrides=list(overrides))
            except Exception as err:  # noqa: BLE001 - any composition error belongs to this point only
                batch.remove(overrides)  # the same list is launched next: the point is not run
                self._record(list(overrides), err)

    def _record(self, overrides: list[str], err: Exception) -> None:
        from pipeline import job

        # Hydra's multi-line message on one line, without the search path it appends (this machine's paths)
        text = str(err) + (f": {err.__cause__}" if err.__cause__ else "")
        message = " ".join(text.split("Config search path")[0].split())
        out = Path(self.config.hydra.sweep.dir) / f"invalid-{self.invalid}"
        self.invalid += 1
        sweep = self.config.hydra.runtime.choices.get("sweep") or "multirun"
        job.record_invalid_point(out, job.JobMeta(sweep=sweep, overrides=overrides), message)
        log.error("point [%s] cannot be composed; recorded as failed in %s: %s", " ".join(overrides), out, message)
