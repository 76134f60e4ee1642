"""MLflow tracking: a Hydra callback (`hydra/callbacks=mlflow`) that logs every job as an MLflow run.

Each job becomes a run of the sweep's experiment: its swept values and key config as params, its summary statistics
and accuracy as metrics, its status and error as tags, its resolved config as an artifact. At the end of a sweep one
more run stands for the sweep: its report and selection.json are its artifacts, the jobs' runs are its children, and
the chosen build's run is tagged `selected`. Everything is read from the job's tables (`results.load`), never from
the job's insides, so a job run in another process (joblib, submitit, Ray) is logged the same way.

The tracker is a guest: one that is down or refuses a write costs a warning, never a result. After a first failure
the callback stops trying in that process, so a sweep does not wait out MLflow's retries once per job.
"""
from __future__ import annotations

import importlib.util
import logging
import time
from pathlib import Path
from typing import Any

import pandas as pd
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from pipeline import results

log = logging.getLogger(__name__)

# runs columns logged as params beside the job's own overrides (and every `axes_<name>`)
KEY_COLUMNS = ("backend", "model", "model_id", "precision", "batch_size", "seed", "config_hash", "sweep", "job")
RUN_ID_TAG = "pipeline.run_id"
SWEEP_TAG = "pipeline.sweep_dir"
SELECTED_TAG = "selected"
KIND_TAG = "pipeline.kind"  # "sweep" on a sweep's own run
SEARCH_MAX = 50000  # MLflow's largest page: every job of a sweep in one search
_PARAM_MAX, _TAG_MAX = 6000, 8000  # MLflow's value limits (mlflow.utils.validation)


class MlflowTracking(Callback):
    """`tracking_uri`: MLflow's (None: MLflow's own default, MLFLOW_TRACKING_URI first); `experiment`: its name
    (None: the sweep's name, `runs` for a single run); `artifact_location`: where a new experiment keeps its
    artifacts (None: the tracking server's default)."""

    def __init__(self, tracking_uri: str | None = None, experiment: str | None = None,
                 artifact_location: str | None = None) -> None:
        self.tracking_uri = tracking_uri or None
        self.experiment = experiment or None
        self.artifact_location = artifact_location or None
        self._down: str | None = None  # why the tracker is not tried again in this process
        if importlib.util.find_spec("mlflow") is None:
            self._down = "mlflow is not installed: pip install -e '.[mlflow]'"
            log.warning("mlflow: hydra/callbacks=mlflow logs nothing: %s", self._down)

    def on_job_end(self, config: DictConfig, job_return: Any = None, **kwargs: Any) -> None:
        # absolute: the sweep's run finds its jobs' runs by their directory
        job_dir = Path(config.hydra.runtime.output_dir).resolve()
        self._guarded(f"job {job_dir}", self.log_job, job_dir)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir).resolve()
        self._guarded(f"sweep {sweep_dir}", self.log_sweep, sweep_dir)

    def _guarded(self, what: str, fn, path: Path) -> None:
        if self._down:
            log.warning("mlflow: %s not logged: %s", what, self._down)
            return
        try:
            fn(path)
        except Exception as err:  # noqa: BLE001 - the tracker must never cost a result
            why = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"[:300]
            self._down = f"the tracker failed earlier in this process ({why})"
            log.warning("mlflow: %s not logged (%s); its tables are complete, the tracker is not tried again in this "
                        "process", what, why)

    # ------------------------------------------------------------------ the work

    def _client(self):
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=self.tracking_uri)

    def _experiment_id(self, client, name: str) -> str:
        from mlflow.exceptions import MlflowException

        found = client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        try:
            return client.create_experiment(name, artifact_location=self.artifact_location)
        except MlflowException:  # another worker of the sweep created it first
            found = client.get_experiment_by_name(name)
            if found is None:
                raise
            return found.experiment_id

    def log_job(self, job_dir: Path) -> str | None:
        """The MLflow run id of the job's run (an existing one when the job was logged already, as a resumed sweep's
        kept jobs are), or None when the job left no runs row."""
        from mlflow.entities import Metric, Param, RunTag

        loaded = results.load(job_dir, tables=("runs", "summary", "accuracy"))
        if loaded.runs.empty:
            log.warning("mlflow: job %s not logged: it has no runs row (%s)", job_dir,
                        "; ".join(why for _, why in loaded.skipped) or "no tables")
            return None
        row = loaded.runs.iloc[0]
        client = self._client()
        experiment_id = self._experiment_id(client, self.experiment or _experiment_name(row))
        logged = client.search_runs([experiment_id], f"tags.`{RUN_ID_TAG}` = '{row.run_id}'", max_results=1)
        if logged:
            return logged[0].info.run_id
        run = client.create_run(experiment_id, start_time=_ms(row.get("started")), run_name=_run_name(row),
                                tags={RUN_ID_TAG: row.run_id, SWEEP_TAG: str(job_dir.parent) if _in_sweep(row)
                                      else "", "status": str(row.status)})
        run_id = run.info.run_id
        now = int(time.time() * 1000)
        params = [Param(k, _text(v, _PARAM_MAX)) for k, v in job_params(row).items()]
        metrics = [Metric(k, float(v), now, 0) for k, v in job_metrics(loaded).items()]
        tags = [RunTag("error", _text(row.get("error"), _TAG_MAX))] if _present(row.get("error")) else []
        client.log_batch(run_id, metrics=metrics, params=params, tags=tags)
        config_file = job_dir / results.JOB_CONFIG
        if config_file.is_file():
            client.log_artifact(run_id, str(config_file))
        client.set_terminated(run_id, "FAILED" if row.status == "failed" else "FINISHED")
        return run_id

    def log_sweep(self, sweep_dir: Path) -> str | None:
        """A run for the sweep (its report and selection.json as artifacts), parent of its jobs' runs; the chosen
        build's run tagged `selected=true` (the others `false`)."""
        loaded = results.load(sweep_dir, tables=("runs",))
        if loaded.runs.empty:
            return None
        runs = loaded.runs
        client = self._client()
        experiment_id = self._experiment_id(client, self.experiment or _experiment_name(runs.iloc[0]))
        found = client.search_runs([experiment_id], f"tags.`{SWEEP_TAG}` = '{sweep_dir}'", max_results=SEARCH_MAX)
        children = {r.data.tags[RUN_ID_TAG]: r.info.run_id for r in found if RUN_ID_TAG in r.data.tags}
        earlier = [r.info.run_id for r in found if r.data.tags.get(KIND_TAG) == "sweep"]  # a resumed sweep's
        parent = earlier[0] if earlier else client.create_run(
            experiment_id, run_name=f"sweep {sweep_dir.name}", tags={SWEEP_TAG: str(sweep_dir), KIND_TAG: "sweep"}
        ).info.run_id
        chosen = runs.loc[runs["selected"].fillna(False).astype(bool), "run_id"] if "selected" in runs else []
        for ours, theirs in children.items():
            client.set_tag(theirs, "mlflow.parentRunId", parent)
            if "selected" in runs:
                client.set_tag(theirs, SELECTED_TAG, str(ours in set(chosen)).lower())
        for ours in chosen:
            if ours in children:
                client.set_tag(parent, "selected_run", children[ours])
        selection = sweep_dir / results.SELECTION_FILE
        if selection.is_file():
            client.log_artifact(parent, str(selection))
        if (sweep_dir / "report").is_dir():
            client.log_artifacts(parent, str(sweep_dir / "report"), artifact_path="report")
        client.set_terminated(parent, "FAILED" if (runs["status"] == "failed").any() else "FINISHED")
        return parent


def job_params(row: pd.Series) -> dict[str, str]:
    """The job's overrides (its swept values, as typed) and its key config, by name."""
    found: dict[str, object] = dict(_overrides(row))
    for column in (*KEY_COLUMNS, *sorted(c for c in row.index if c.startswith("axes_"))):
        if column in row.index and _present(row[column]):
            found.setdefault(column, row[column])
    return {k: str(v) for k, v in found.items()}


def _overrides(row: pd.Series) -> list[tuple[str, str]]:
    """(key, value) of the job's overrides that can change a result (not hydra.*, cache.dir, resume ...)."""
    pairs = (item.lstrip("+~").partition("=") for item in str(row.get("overrides") or "").split())
    return [(k, v) for k, _, v in pairs
            if k and not k.startswith("hydra") and k.split(".")[0] not in results.NEVER_CHANGES_RESULT]


def job_metrics(loaded: results.Results) -> dict[str, float]:
    """`<metric>/<stat>` of every summary row and `accuracy/<output>/<metric>` of every accuracy row."""
    found = {f"{r.metric}/{r.stat}": r.value for r in loaded.summary.itertuples()}
    found.update({f"accuracy/{r.output}/{r.metric}": r.value for r in loaded.accuracy.itertuples()})
    return {k: v for k, v in found.items() if _present(v)}


def _experiment_name(row: pd.Series) -> str:
    return str(row["sweep"]) if _in_sweep(row) else "runs"


def _in_sweep(row: pd.Series) -> bool:
    return "sweep" in row.index and _present(row["sweep"]) and str(row["sweep"]) != ""


def _run_name(row: pd.Series) -> str:
    """The job's own overrides (what makes it this point), else its run id."""
    point = " ".join(f"{k}={v}" for k, v in _overrides(row))
    return _text(point, 250) if point else str(row.run_id)


def _present(value: Any) -> bool:
    return value is not None and not (isinstance(value, float) and pd.isna(value)) and value is not pd.NA


def _text(value: Any, limit: int) -> str:
    text = str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _ms(started: Any) -> int | None:
    try:
        return int(pd.Timestamp(started).timestamp() * 1000)
    except (TypeError, ValueError):
        return None
