"""Hydra glue: compose the config, hand a plain resolved dict to pipeline.job, summarise a sweep at its end.

Job errors never reach Hydra: each one is caught and recorded as a `failed` row, so a multirun always runs
every point (Hydra's basic sweeper would otherwise stop at the end of the batch and skip the summary).
The exit status is decided by main() from FAILED.
"""
from __future__ import annotations

import logging
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from pipeline import schema

schema.register()
CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")  # absolute: works from any working directory
log = logging.getLogger("pipeline")
FAILED: list[str] = []  # run ids (or a sweep dir) that failed in this process


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def hydra_main(cfg: DictConfig) -> None:
    from pipeline import job, summary

    hc = HydraConfig.get()
    multirun = hc.mode == RunMode.MULTIRUN
    meta = job.JobMeta(sweep=hc.runtime.choices.get("sweep", "multirun") if multirun else None,
                       job=hc.job.num if multirun else None, overrides=list(hc.overrides.task))
    out_dir = Path(hc.runtime.output_dir)
    try:
        config = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
        if config["backend"]["name"] == "auto":
            raise schema.ConfigError("backend=auto is resolved by `python -m pipeline`; when composing the config "
                                     "yourself name a backend: onnxruntime, torch or tensorrt")
    except Exception as err:  # an interpolation that does not resolve, or the check above
        outcome = job.record_config_error(out_dir, meta, OmegaConf.to_container(cfg, resolve=False), err)
    else:
        outcome = job.run_job(config, out_dir, meta)
    if outcome.status == "failed":
        FAILED.append(outcome.run_id)
    if not multirun:
        print(summary.job_summary(outcome, out_dir))


class SweepSummary(Callback):
    """At the end of a multirun: one line per point from the tables the jobs wrote."""

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        from pipeline import summary, results

        sweep_dir = Path(config.hydra.sweep.dir)
        loaded = results.load(sweep_dir, tables=("runs", "summary", "accuracy"))
        print(summary.sweep_summary(loaded, sweep_dir))
        runs = loaded.runs
        if runs.empty or (runs["status"] == "failed").any():
            FAILED.append(str(sweep_dir))
