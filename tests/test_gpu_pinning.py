"""One GPU per worker (stages/gpu/pinning.py, hydra/launcher=gpus), on simulated GPU lists: CUDA_VISIBLE_DEVICES
names GPUs that this CPU machine does not have, which is all the pinning reads before CUDA starts."""
import json
import os
import subprocess
import sys

import pytest

from pipeline import results
from stages.gpu import lock, pinning
from tests.conftest import FAST, ROOT, run_cli

CLAIM = ("import json, sys; from stages.gpu import pinning; p = pinning.pin(sys.argv[1]); "
         "print(json.dumps([p and p.device, p and p.shared, __import__('os').environ.get('CUDA_VISIBLE_DEVICES')]),"
         " flush=True); sys.stdin.read()")


@pytest.fixture
def host(tmp_path, monkeypatch):
    """A simulated host: its GPU claims in a directory of the test's own."""
    monkeypatch.setenv(lock.LOCK_DIR_ENV, str(tmp_path / "locks"))
    (tmp_path / "locks").mkdir()
    return tmp_path


def worker(gpus: str, mode: str = "auto") -> tuple[subprocess.Popen, list]:
    """A process that pins itself and stays alive (holding its claim) until its stdin closes."""
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": gpus, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", CLAIM, mode], env=env, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    return proc, json.loads(proc.stdout.readline())


def test_each_worker_takes_a_gpu_of_its_own_until_it_exits(host):
    first, got_first = worker("0,1")
    second, got_second = worker("0,1")
    third, got_third = worker("0,1")
    try:
        assert got_first == ["0", False, "0"]  # CUDA_VISIBLE_DEVICES narrowed to its GPU, before CUDA starts
        assert got_second == ["1", False, "1"]
        device, shared, visible = got_third  # more workers than GPUs: it shares one, and says so
        assert shared is True and device in ("0", "1") and visible == device
        first.communicate("")  # exits: its claim goes with it
        fourth, got_fourth = worker("0,1")
        fourth.communicate("")
        assert got_fourth == ["0", False, "0"]
    finally:
        for proc in (first, second, third):
            if proc.poll() is None:
                proc.communicate("")


def test_one_gpu_none_or_off_is_left_as_it_is(host):
    for gpus, mode in (("3", "auto"), ("", "auto"), ("0,1", "off")):
        proc, got = worker(gpus, mode)
        proc.communicate("")
        assert got == [None, None, gpus]  # a scheduler's own choice (SLURM, Ray: one GPU) is kept


def test_uuids_name_the_claims(host, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-aaaa, GPU-bbbb")
    assert pinning.visible() == ["GPU-aaaa", "GPU-bbbb"]
    assert pinning.claim_path("GPU-bbbb").name == "pipeline-gpu-claim-GPU-bbbb.lock"
    with pytest.raises(ValueError, match="gpu.pin = 'sometimes': valid: auto, off"):
        pinning.pin("sometimes")


@pytest.mark.slow  # the real CLI: joblib, one worker per GPU; submitit's local executor, one process per point
@pytest.mark.parametrize("launcher, plugin", [("gpus", "hydra_joblib_launcher"), ("local", "hydra_submitit_launcher")])
def test_a_sweep_spreads_over_the_gpus(host, monkeypatch, launcher, plugin):
    pytest.importorskip(f"hydra_plugins.{plugin}")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    proc = run_cli(["-m", f"hydra/launcher={launcher}", "model=tiny_cnn", "backend=onnxruntime",
                    "precision=fp32,int8,bf16", "batch_size=1,2", "report.enabled=false", "hydra.sweep.dir=sweep",
                    *FAST], host, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    runs = results.load(host / "sweep").runs
    assert len(runs) == 6 and set(runs.status) == {"ok", "unsupported"}  # bf16: not on ORT's CPU provider
    assert set(runs.gpu_device) == {"0", "1"}  # both GPUs used, whoever ran first
    if launcher == "gpus":
        assert not runs.gpu_shared.any()  # two workers, a GPU each, for the whole sweep


def test_the_pin_setting_changes_no_result(base_config):
    from pipeline.run import job

    off = {**base_config, "gpu": {"pin": "off"}}
    assert job.config_hash(off) == job.config_hash(base_config)
