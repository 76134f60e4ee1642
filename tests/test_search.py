"""`python -m pipeline +search=optuna`: Hydra's Optuna sweeper over precision and batch size, minimising
select.metric under the accuracy constraint; every trial a runs row with its objective; the same "best:" line."""
from __future__ import annotations

import pytest
import yaml

from pipeline import results
from pipeline.__main__ import resolve_search
from pipeline.analysis import select
from tests.conftest import FAST, run_cli

pytest.importorskip("hydra_plugins.hydra_optuna_sweeper", reason="pip install -e '.[search]'")

# What the TPE sampler seeded with 0 (conf/search/optuna.yaml) asks first: its first trials are random draws
# (n_startup_trials = 10), so they do not depend on the measured objectives and the same six come every time.
FIRST_SIX = [("tf32", 32), ("int8", 32), ("fp16", 8), ("fp32", 32), ("fp16", 1), ("fp32", 8)]


def test_the_search_config_names_its_sweeper_on_the_command_line():
    assert resolve_search(["+search=optuna", "x=1"]) == ["+search=optuna", "x=1", "hydra/sweeper=optuna"]
    assert resolve_search(["+search=optuna", "--cfg", "job"]) == ["+search=optuna", "hydra/sweeper=optuna", "--cfg",
                                                                  "job"]
    assert resolve_search(["+search=optuna", "hydra/sweeper=basic"]) == ["+search=optuna", "hydra/sweeper=basic"]
    assert resolve_search(["+sweep=precision"]) == ["+sweep=precision"]
    assert resolve_search(["+search=mine"]) == ["+search=mine"]  # not ours (a user's config dir): Hydra decides


@pytest.mark.slow  # the real CLI
def test_a_seeded_optuna_search_on_cpu(tmp_path):
    proc = run_cli(["+search=optuna", "hydra.sweeper.n_trials=6", "backend=onnxruntime", "report.enabled=false",
                    *FAST], tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    sweep_dir = next((tmp_path / "outputs/sweeps/search").iterdir())
    runs = results.load(sweep_dir).runs.sort_values("job")
    assert list(runs["job"]) == list(range(6))  # every trial left a row, like any job
    assert list(zip(runs["precision"], runs["batch_size"])) == FIRST_SIX
    tf32 = runs.iloc[0]  # a GPU math mode: unsupported here, recorded as infeasible with the penalty
    assert tf32.status == "unsupported" and not tf32.feasible and tf32.objective == select.PENALTY
    ok = runs[runs["status"] == "ok"]
    assert ok["feasible"].all() and (ok["objective"] < 1000).all()
    best = [line for line in proc.stdout.splitlines() if line.startswith("best: ")]
    assert len(best) == 1, proc.stdout[-3000:]
    chosen = runs[runs["selected"].astype(bool)].iloc[0]
    assert best[0].startswith(f"best: precision={chosen.precision} batch_size={chosen.batch_size} ")
    # what Optuna was told is what the runs record: its best trial is the selected run
    optuna = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    assert optuna["best_value"] == pytest.approx(chosen.objective)
    assert optuna["best_params"] == {"precision": chosen.precision, "batch_size": int(chosen.batch_size)}
