"""`hydra/sweeper=resilient` (the project's default): the grid of Hydra's basic sweeper (the cartesian product of
the comma-separated values of `hydra.sweeper.params` and the command line), except that a point whose config
cannot be composed (an unknown group option such as precision=fp9, a value of the wrong type, a broken YAML file)
becomes a `failed` row of its own instead of stopping the whole sweep before it starts.

Written on Hydra's public plugin API (`Sweeper`, the overrides parser, the launcher), not on the basic sweeper's
internals. Every point is composed once before launching: that is where a bad one is caught, recorded under
`<sweep dir>/invalid-<k>/`, and left out. The others run as usual, through whichever launcher is configured. Hydra's
in-process launcher (the default) is handed the configs composed here instead of composing each point again (a
composition is most of what a cached job costs); a launcher whose jobs run in other processes composes them there.
Points that choose the same config group options (a sweep over values) share the merge of their configs
(_SharedChoices): each is composed from a deep copy of it, its own values applied by Hydra as ever.

A point whose process died without a result (`kill -9`, out of memory: submitit's launchers then raise for the whole
batch) becomes a `failed` row saying `lost: ...`, and the other points' results are kept; so does a batch the
launcher could not run at all. After a SIGTERM (pipeline/run/app.py notes it) the batches not launched yet are
recorded as not run, not launched.

A job whose task raised (any Hydra app's task: the pipeline's own never raises, it records the error in its row)
does not stop the later batches; once every batch has run, the first such exception is raised, as Hydra's basic
sweeper does (it stops at the end of the failing batch), so the multirun exits 1 and shows the error.
`max_batch_size` below 0 is refused by name; 0 or null puts every point in one batch.
"""
# No `from __future__ import annotations`: Hydra's plugin scan imports this module in a way that dataclasses
# cannot resolve string annotations in.
import contextlib
import copy
import itertools
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from hydra.plugins.sweeper import Sweeper
from omegaconf import DictConfig, OmegaConf, open_dict

log = logging.getLogger(__name__)


@dataclass
class ResilientSweeperConf:
    _target_: str = "hydra_plugins.pipeline_sweeper.resilient.ResilientSweeper"
    max_batch_size: Optional[int] = None  # points launched together (None or 0: all of them)
    params: Optional[Dict[str, str]] = None  # key -> "v1,v2,...": the sweep a `conf/sweep/*.yaml` declares


ConfigStore.instance().store(group="hydra/sweeper", name="resilient", node=ResilientSweeperConf, provider="pipeline")


class ResilientSweeper(Sweeper):
    def __init__(self, max_batch_size: Optional[int] = None, params: Optional[Dict[str, str]] = None) -> None:
        super().__init__()
        self.max_batch_size = max_batch_size
        self.params = dict(params or {})
        self.invalid = 0  # points recorded as invalid so far in this sweep
        self.composed: Optional[_Composed] = None  # the checked points' configs, for an in-process launcher

    def setup(self, *, hydra_context, task_function, config: DictConfig) -> None:
        from hydra.core.plugins import Plugins

        self.hydra_context, self.config = hydra_context, config
        self.launcher = Plugins.instance().instantiate_launcher(hydra_context=hydra_context,
                                                                task_function=task_function, config=config)
        from hydra._internal.core_plugins.basic_launcher import BasicLauncher

        if type(self.launcher) is BasicLauncher:  # composes each point in this process, as it launches it
            self.composed = _Composed(hydra_context.config_loader)

    def sweep(self, arguments: List[str]) -> Any:
        if self.max_batch_size is not None and self.max_batch_size < 0:
            raise HydraException(f"hydra.sweeper.max_batch_size = {self.max_batch_size}: must be >= 0 "
                                 f"(0 or null: all points in one batch)")
        points = self.grid([f"{k}={v}" for k, v in self.params.items()] + list(arguments))
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        from pipeline import results

        results.write_points(sweep_dir, points)  # the grid load() holds the rows against (points.json)
        size = self.max_batch_size or len(points) or 1
        returns, job_idx, raised = [], 0, []
        for start in range(0, len(points), size):
            with _shared_choices(self.hydra_context.config_loader):
                batch = [p for p in points[start:start + size] if self._composes(p)]
            stopped = _stop_requested()
            if batch and stopped:  # a parallel launcher's workers would not know: record them here
                for idx, overrides in enumerate(batch, start=job_idx):
                    self._record_point(overrides, idx, lambda out, meta, config, why=stopped:
                                       _job().record_not_run(out, meta, config, why))
            elif batch:
                returned, failed = self._launch(batch, job_idx)
                returns.append(returned)
                raised.extend(failed)
            job_idx += len(batch)
            if self.composed is not None:  # a batch recorded as not run leaves its configs unused
                self.composed.clear()
        if raised:  # as Hydra's basic sweeper, but after every batch: the first job's exception ends the multirun
            _ = raised[0].return_value  # raises it (Hydra prints which overrides it came from)
        return returns

    def _launch(self, batch: List[List[str]], job_idx: int) -> Any:
        """The launcher's returns for the batch, and those of the jobs whose task raised (the pipeline's own task
        never does: it records every error in its row). A point that died without a result, or a batch the
        launcher could not run, does not end the sweep: each such point without a row gets a `failed` row saying
        why, and is no job that raised."""
        with _failed_submitit_jobs() as died, _handed_over(self.composed):
            try:
                returned = self.launcher.launch(batch, initial_job_idx=job_idx)
            except Exception as err:  # noqa: BLE001 - the launcher's failure belongs to this batch only
                died.append((None, err))
                returned = []
        if died:
            why = {_job_num(job): err for job, err in died}
            for idx, overrides in enumerate(batch, start=job_idx):
                err = why.get(idx, why.get(None, next(iter(why.values()))))
                self._record_lost(overrides, idx, err)
        lost = {id(err) for _, err in died}
        failed = [r for r in returned or [] if _raised(r) and id(getattr(r, "_return_value", None)) not in lost]
        for r in failed:
            log.error("job [%s] raised %s: %s", " ".join(r.overrides or []), type(r._return_value).__name__,
                      r._return_value)
        return returned, failed

    def _record_lost(self, overrides: List[str], idx: int, err: BaseException) -> None:
        from pipeline.config import errors

        message = errors.one_line(err) if isinstance(err, Exception) else type(err).__name__

        def record(out: Path, meta, config: dict) -> None:
            if (out / "tables" / "runs.parquet").is_file():  # it wrote its row: not lost
                return
            _job().record_failed(out, meta, config, f"lost: its process ended without a result ({message}); "
                                                    f"rerun it with resume=true")
            log.error("job %s [%s] left no row; recorded as failed (lost): %s", idx, " ".join(overrides), message)
        self._record_point(overrides, idx, record)

    def _record_point(self, overrides: List[str], idx: int, record) -> None:
        """record(job dir, JobMeta, resolved config) for point `idx`, composed as its launcher would."""
        from hydra.core.hydra_config import HydraConfig

        from pipeline.config import errors

        job = _job()
        try:
            cfg = self.hydra_context.config_loader.load_sweep_config(master_config=self.config,
                                                                    sweep_overrides=list(overrides))
            with open_dict(cfg):
                cfg.hydra.job.id = idx
                cfg.hydra.job.num = idx
            saved = HydraConfig.instance().cfg
            HydraConfig.instance().set_config(cfg)
            try:
                out = Path(str(cfg.hydra.sweep.dir)) / str(cfg.hydra.sweep.subdir)
                task = copy.deepcopy(cfg)
                with open_dict(task):
                    del task["hydra"]
                config = OmegaConf.to_container(task, resolve=True, enum_to_str=True)
            finally:
                HydraConfig.instance().cfg = saved
            sweep = cfg.hydra.runtime.choices.get("sweep") or "multirun"
            record(out, job.JobMeta(sweep=sweep, job=idx, overrides=list(cfg.hydra.overrides.task)), config)
        except Exception as err:  # noqa: BLE001 - recording one point must not end the sweep
            log.error("job %s [%s]: cannot record its row (%s)", idx, " ".join(overrides), errors.one_line(err))

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
            cfg = self.hydra_context.config_loader.load_sweep_config(master_config=self.config,
                                                                     sweep_overrides=list(overrides))
            if self.composed is not None:
                self.composed.keep(self.config, overrides, cfg)
            return True
        except Exception as err:  # noqa: BLE001 - any composition error belongs to this point only
            self._record(list(overrides), err)
            return False

    def _record(self, overrides: List[str], err: Exception) -> None:
        from pipeline.config import errors
        from pipeline.run import job

        message = errors.one_line(err)
        out = Path(self.config.hydra.sweep.dir) / f"invalid-{self.invalid}"
        self.invalid += 1
        sweep = self.config.hydra.runtime.choices.get("sweep") or "multirun"
        job.record_invalid_point(out, job.JobMeta(sweep=sweep, overrides=overrides), message)
        log.error("point [%s] cannot be composed; recorded as failed in %s: %s", " ".join(overrides), out, message)


class _Composed:
    """The configs the sweeper composed to check a batch's points, each handed once to the in-process launcher in
    place of composing that point again: the same call (load_sweep_config) with the same master config and
    overrides, so the same config, and the master's resolver cache copied into it when it is handed over, as a
    composition then would. At most KEEP are kept (about 0.6 MB each): a point beyond them is composed again."""

    KEEP = 256

    def __init__(self, loader: Any) -> None:
        self.loader = loader
        self.kept: Dict[Tuple[int, Tuple[str, ...]], List[DictConfig]] = {}
        self.count = 0

    def keep(self, master: DictConfig, overrides: List[str], cfg: DictConfig) -> None:
        if self.count < self.KEEP:
            self.kept.setdefault((id(master), tuple(overrides)), []).append(cfg)
            self.count += 1

    def load_sweep_config(self, master_config: DictConfig, sweep_overrides: List[str]) -> DictConfig:
        """What the launcher calls in place of the loader's own load_sweep_config while a batch is launched."""
        kept = self.kept.get((id(master_config), tuple(sweep_overrides)))
        if not kept:
            return type(self.loader).load_sweep_config(self.loader, master_config, sweep_overrides)
        cfg = kept.pop(0)
        OmegaConf.copy_cache(from_config=master_config, to_config=cfg)
        return cfg

    def clear(self) -> None:
        self.kept.clear()
        self.count = 0


class _SharedChoices:
    """Points of a batch that choose the same config group options (a sweep over values: batch_size, an
    optimization level) compose the same defaults list and merge the same configs from it; only their value
    overrides, applied after the merge, differ. Here the first such point's defaults list and merged config are
    kept, and each later one is handed the same defaults list and a deep copy of the merged config, to which Hydra
    then applies that point's own overrides: the config composing it anew gives, for most of the cost. A point with
    other group options (a sweep over precisions, backends) is composed as before. Unlike the rest of this module it
    reaches into Hydra's config loader (hydra-core 1.3, which pyproject.toml pins): tests/test_resilient_sweeper.py
    holds every point's config to the one Hydra composes for it alone."""

    KEEP = 32  # distinct group choices kept at once (a merged config is about 0.6 MB)

    def __init__(self, loader: Any) -> None:
        self.loader = loader
        self.lists: Dict[Tuple, Any] = {}  # config name, group and Hydra overrides -> Hydra's DefaultsList
        self.merged: Dict[int, Tuple[Any, DictConfig]] = {}  # id of a kept defaults list -> (it, its merged config)

    def create_defaults_list(self, repo: Any, config_name: Optional[str], overrides_list: List[Any],
                             prepend_hydra: bool, skip_missing: bool) -> Any:
        from hydra._internal.defaults_list import DefaultsList, Overrides

        # Hydra's own split: an override of a config group chooses a config, any other is a value applied after the
        # merge. Hydra's overrides (hydra.searchpath...) stay in the key: they may change what the group options are.
        values = Overrides(repo=repo, overrides_list=overrides_list).config_overrides
        by_value = {id(o) for o in values}
        key = (config_name, prepend_hydra, skip_missing,
               tuple(o.input_line for o in overrides_list if id(o) not in by_value or o.is_hydra_override()))
        kept = self.lists.get(key)
        if kept is None:
            kept = _real_create_defaults_list(repo, config_name, overrides_list, prepend_hydra, skip_missing)
            if len(self.lists) >= self.KEEP:
                self.merged.pop(id(self.lists.pop(next(iter(self.lists))).defaults), None)
            self.lists[key] = kept
            return kept
        return DefaultsList(defaults=kept.defaults, defaults_tree=kept.defaults_tree, config_overrides=values,
                            overrides=kept.overrides)

    def compose(self, defaults: Any, repo: Any) -> DictConfig:
        """In place of the loader's _compose_config_from_defaults_list (the merge, before any value override)."""
        merged = self.merged.get(id(defaults))
        if merged is not None and merged[0] is defaults:
            return copy.deepcopy(merged[1])
        cfg = type(self.loader)._compose_config_from_defaults_list(self.loader, defaults, repo)
        if any(kept.defaults is defaults for kept in self.lists.values()):
            self.merged[id(defaults)] = (defaults, copy.deepcopy(cfg))
        return cfg


def _copy_on_write_repository():
    """Hydra's CachingConfigRepository deep-copies the loader's whole repository (every config the ConfigStore holds)
    for each composition, so that initialize_sources (a hydra.searchpath) cannot change the loader's own. This one
    reads the loader's repository until then, and copies it only if that happens: the same reads, without the copy."""
    from hydra._internal.config_repository import CachingConfigRepository

    class CopyOnWriteRepository(CachingConfigRepository):
        def __init__(self, delegate: Any) -> None:
            self.delegate, self.cache, self.copied = delegate, {}, False

        def initialize_sources(self, config_search_path: Any) -> None:
            if not self.copied:
                self.delegate, self.copied = copy.deepcopy(self.delegate), True
            super().initialize_sources(config_search_path)

    return CopyOnWriteRepository


_real_create_defaults_list: Any = None


@contextlib.contextmanager
def _shared_choices(loader: Any):
    """While a batch's points are composed, those with the same group options share their merge (_SharedChoices),
    and no composition copies the loader's repository unless it changes its search path."""
    global _real_create_defaults_list
    from hydra._internal import config_loader_impl

    if _real_create_defaults_list is not None:  # already inside one
        yield
        return
    shared = _SharedChoices(loader)
    _real_create_defaults_list = config_loader_impl.create_defaults_list
    real_repository = config_loader_impl.CachingConfigRepository
    config_loader_impl.create_defaults_list = shared.create_defaults_list
    config_loader_impl.CachingConfigRepository = _copy_on_write_repository()
    loader._compose_config_from_defaults_list = shared.compose
    try:
        yield
    finally:
        del loader._compose_config_from_defaults_list
        config_loader_impl.CachingConfigRepository = real_repository
        config_loader_impl.create_defaults_list = _real_create_defaults_list
        _real_create_defaults_list = None


@contextlib.contextmanager
def _handed_over(composed: Optional[_Composed]):
    """While a batch is launched, its launcher's compositions come from `composed` (None: nothing changes)."""
    if composed is None:
        yield
        return
    composed.loader.load_sweep_config = composed.load_sweep_config
    try:
        yield
    finally:
        del composed.loader.load_sweep_config
        composed.clear()


def _job():
    from pipeline.run import job

    return job


def _stop_requested() -> Optional[str]:
    return _job().stop_requested()


@contextlib.contextmanager
def _failed_submitit_jobs():
    """submitit's launchers wait for each job with `job.results()`, which raises for a job that died (kill -9: 'has
    not produced any output'), ending the launch before the other jobs' results are read. While this is open a
    dead job's results() gives a failed JobReturn instead, and (job, error) is appended to the list yielded."""
    died: List[Any] = []
    try:
        from submitit.core.core import Job
        from submitit.core.utils import UncompletedJobError
    except ImportError:  # no submitit: nothing to catch
        yield died
        return
    from hydra.core.utils import JobReturn, JobStatus

    real = Job.results

    def results(job):
        try:
            return real(job)
        except UncompletedJobError as err:
            died.append((job, err))
            ret = JobReturn()
            ret.status, ret.return_value = JobStatus.FAILED, err
            return [ret]

    Job.results = results
    try:
        yield died
    finally:
        Job.results = real


def _raised(ret) -> bool:
    """Whether a launcher's JobReturn is of a task that raised (Hydra keeps the exception as its return value)."""
    from hydra.core.utils import JobStatus

    return getattr(ret, "status", None) == JobStatus.FAILED


def _job_num(job) -> Optional[int]:
    """The sweep index a submitit job ran (the launcher passes it as the third argument); None if unknown."""
    if job is None:
        return None
    try:
        return int(job.submission().args[2])
    except Exception:  # noqa: BLE001 - the pickle may be gone or unreadable
        return None
