"""Every `python -m pipeline` command in the README's code blocks is a tested command: each composes as written
(Hydra's `--cfg job`: the config is built, nothing runs), and those of "Bring your model" run end to end."""
import re

import pytest

from pipeline import results
from tests.conftest import FAST, ROOT, run_cli

README = (ROOT / "README.md").read_text()


def commands(section: str | None = None) -> list[list[str]]:
    """The arguments of each `python -m pipeline ...` line in the README's bash blocks (of one `## section`),
    without its comment and its optional `[...]` parts."""
    text = README if section is None else README.split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
    found = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.splitlines():
            line = re.sub(r"\[[^\]]*\]", "", line.split("#", 1)[0])
            match = re.search(r"python -m pipeline\s+(.*)$", line)
            if match:
                found.append(match.group(1).split())
    return found


def test_the_readme_has_the_commands_this_file_runs():
    assert len(commands()) >= 10 and commands("Bring your model")


@pytest.mark.parametrize("args", commands(), ids=" ".join)
def test_every_readme_command_composes(args, tmp_path):
    if "-m" in args:  # Hydra prints no config of a multirun: its first point's
        args = [a.split(",")[0] for a in args if a != "-m"]
    proc = run_cli([*args, "--cfg", "job"], tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "precision:" in proc.stdout  # the composed job config was printed


@pytest.mark.slow
@pytest.mark.parametrize("args", commands("Bring your model"), ids=" ".join)
def test_every_bring_your_model_command_runs(args, tmp_path):
    proc = run_cli([*args, *FAST], tmp_path, timeout=600)
    runs = results.load(tmp_path / "outputs").runs
    assert proc.returncode == 0 and list(runs.status) == ["ok"], (proc.stderr[-2000:], list(runs.error))
