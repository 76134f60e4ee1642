"""Progress: plain lines when stdout is not a terminal, a live display when it is, and a Hydra sweep's size."""
from __future__ import annotations

import io
import logging
import os
import pty
import re
import subprocess
import sys

import pytest
from omegaconf import OmegaConf

from pipeline.run import progress
from tests.conftest import ROOT


def drive(p: progress.Progress, while_measuring=lambda: None, label="precision=int8",
          error="build: no bf16 kernel") -> None:
    """One job as the orchestrator reports it: two stages, then a measurement in tenths."""
    p.job_started(2, 3, label)
    p.stage_started("export", "export")
    p.stage_finished("export", "hit", 0.004)
    p.stage_started("benchmark", "benchmark_onnxruntime")
    for i in range(11):
        p.measuring(i / 10, elapsed_s=0.02 * i, target_s=0.2)
        while_measuring()
    p.stage_finished("benchmark", "off", 0.21)
    p.job_finished("unsupported", error)
    p.close()


def test_not_a_terminal_gives_plain_lines():
    out = io.StringIO()
    p = progress.create(out)
    assert isinstance(p, progress.PlainProgress)
    drive(p)
    assert out.getvalue().splitlines() == [
        "[job 2/3 precision=int8] started",
        "[job 2/3 precision=int8] export (export) ...",
        "[job 2/3 precision=int8] export hit 0.00s",
        "[job 2/3 precision=int8] benchmark (benchmark_onnxruntime) ...",
        # a line per quarter, not one per call
        "[job 2/3 precision=int8] benchmark measuring 30% (0.1/0.2 s)",
        "[job 2/3 precision=int8] benchmark measuring 50% (0.1/0.2 s)",
        "[job 2/3 precision=int8] benchmark measuring 80% (0.2/0.2 s)",
        "[job 2/3 precision=int8] benchmark measuring 100% (0.2/0.2 s)",
        "[job 2/3 precision=int8] benchmark off 0.21s",
        "[job 2/3 precision=int8] unsupported: build: no bf16 kernel",
    ]


def test_plain_measuring_line_at_least_every_interval():
    out, now = io.StringIO(), [0.0]
    p = progress.PlainProgress(out, clock=lambda: now[0])
    p.stage_started("benchmark", "benchmark_onnxruntime")
    p.measuring(0.01)
    now[0] = progress.PLAIN_MEASURE_EVERY_S + 1  # a long measurement still shows it is alive
    p.measuring(0.02)
    assert out.getvalue().splitlines()[1:] == ["benchmark measuring 2%"]


def test_disabled_prints_nothing():
    out = io.StringIO()
    p = progress.create(out, enabled=False)
    drive(p)
    assert out.getvalue() == ""


def test_subprocess_with_piped_stdout_is_plain():
    code = "from pipeline.run import progress; print(type(progress.create()).__name__)"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert proc.stdout.strip() == "PlainProgress", proc.stderr


def test_subprocess_on_a_terminal_is_live():
    code = "from pipeline.run import progress; import sys; sys.stderr.write(type(progress.create()).__name__)"
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "TERM")} | {"PYTHONPATH": str(ROOT)}
    leader, follower = pty.openpty()
    try:
        proc = subprocess.run([sys.executable, "-c", code], env=env, stdout=follower, stderr=subprocess.PIPE,
                              text=True, timeout=60)
    finally:
        os.close(follower)
        os.close(leader)
    assert proc.stderr.strip().endswith("RichProgress"), proc.stderr


def test_live_display_renders_and_restores_logging():
    from rich.console import Console

    out = io.StringIO()
    handler = logging.StreamHandler(sys.__stdout__)
    logger = logging.getLogger("pipeline.test_progress")
    logger.addHandler(handler)
    try:
        p = progress.RichProgress(out, console=Console(file=out, force_terminal=True, width=120))
        assert handler.stream is not sys.__stdout__  # log lines go through the display while it is live
        logger.warning("a line from the log")
        # the display redraws 10 times a second, this test is faster; brackets are text, not rich markup
        drive(p, while_measuring=p.bars.refresh, label="model.input_shape=[3,64,64]",
              error="build: [ONNXRuntimeError] : 9 : NOT_IMPLEMENTED [/bold]")
        assert handler.stream is sys.__stdout__
    finally:
        logger.removeHandler(handler)
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out.getvalue())
    for expected in ("job 2/3", "model.input_shape=[3,64,64]", "export", "hit", "benchmark",
                     "measuring 50% (0.1/0.2 s)", "off", "unsupported: build: [ONNXRuntimeError] : 9 : NOT_IMPLEMENTED "
                     "[/bold]", "a line from the log"):
        assert expected in text, expected


@pytest.mark.parametrize("overrides, jobs", [
    (["precision=fp32,int8,bf16", "batch_size=1,8", "seed=0"], 6),
    (["batch_size=range(1,5)", "+sweep=precision"], 4),
    (["seed=0"], 1),
    (["model=glob(*)"], None),  # needs the config repository to enumerate
])
def test_the_size_of_a_sweep(overrides, jobs):
    from omegaconf import OmegaConf

    hydra_cfg = OmegaConf.create({"sweeper": {"params": None}, "overrides": {"task": overrides}})
    assert progress.Sweep.from_hydra(hydra_cfg).jobs == jobs


def test_sweep_merges_sweeper_params_with_the_command_line():
    hydra = OmegaConf.create({"sweeper": {"params": {"precision": "fp32,tf32,fp16,bf16,int8,fp8"}},
                              "overrides": {"task": ["+sweep=precision", "batch_size=1,8", "seed=3"]}})
    sweep = progress.Sweep.from_hydra(hydra)
    assert sweep == progress.Sweep(12, ("precision", "batch_size"))
    job = ["precision=int8", "+sweep=precision", "batch_size=8", "seed=3"]  # one job's overrides.task
    assert sweep.label(job) == "precision=int8 batch_size=8"
    hydra.overrides.task.append("precision=fp32,int8")  # the command line wins over the sweep file
    assert progress.Sweep.from_hydra(hydra).jobs == 4
    hydra.overrides.task.append("model=glob(*)")
    assert progress.Sweep.from_hydra(hydra).jobs is None


def test_one_display_per_process():
    out = io.StringIO()
    first = progress.begin(progress.Sweep(3, ("precision",)), stream=out)
    assert progress.current() is first and isinstance(first, progress.PlainProgress)
    progress.start_job(1, ["precision=int8", "seed=0"])  # Hydra's job.num counts from 0
    progress.current().job_finished("ok")
    progress.end()
    assert type(progress.current()) is progress.Progress  # after the sweep: hooks that do nothing
    assert out.getvalue().splitlines() == ["[job 2/3 precision=int8] started", "[job 2/3 precision=int8] ok"]


def test_a_measurement_past_its_duration_says_it_waits_for_its_iterations():
    out = io.StringIO()
    display = progress.create(out)
    display.stage_started("benchmark", "stages.benchmark")
    display.measuring(0.33, 1.7, 0.5)  # a slow model: a third of its minimum iterations after 1.7 s of 0.5
    line = out.getvalue().splitlines()[-1]
    assert "1.7/0.5" not in line
    assert "measuring 33% (1.7 s, past the 0.5 s minimum: until benchmark.min_iterations)" in line
