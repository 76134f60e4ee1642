"""A factory's export key covers the user's code the model comes from, not only the file defining the factory:
an edit to a module the factory imports is an export miss."""
import textwrap
import time

import pytest

from pipeline import results
from tests.conftest import FAST, run_cli

FACTORY = textwrap.dedent("""
    from parts import Net

    def make():
        return Net()
""")

PARTS = textwrap.dedent("""
    import torch

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(8, 10)

        def forward(self, x):
            return self.fc(x)
""")


@pytest.mark.slow
def test_editing_an_imported_module_is_an_export_miss(workdir):
    (workdir / "fac.py").write_text(FACTORY)
    (workdir / "parts.py").write_text(PARTS)
    args = ["model=factory", "model._target_=fac.make", "model.input_shape=[8]", *FAST]

    def latest_run():
        proc = run_cli(args, workdir)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        return results.load(workdir / "outputs/runs").runs.sort_values("started").iloc[-1]

    first = latest_run()
    assert (first.export_cache, first.export_parameters) == ("miss", 8 * 10 + 10)
    (workdir / "parts.py").write_text(PARTS.replace("Linear(8, 10)", "Linear(8, 20)"))
    time.sleep(1)  # a new run directory (they are named by the second)
    second = latest_run()
    assert (second.export_cache, second.export_parameters) == ("miss", 8 * 20 + 20)
