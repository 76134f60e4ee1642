"""CI installs and tests as the README says: .ci/run runs the README's install steps and its test command."""
import re

from tests.conftest import ROOT


def test_ci_runs_the_readmes_install_steps_and_test_command():
    first_block = re.search(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S).group(1)
    steps = [s.strip() for line in first_block.splitlines() for s in line.split("&&")]
    installs = [s.removeprefix("pip install ") for s in steps if s.startswith("pip install ")]
    tests = [s for s in steps if s.startswith("python -m pytest")]
    assert len(installs) == 2 and "[test]" not in installs[0] and "[test]" in installs[1], steps
    ci = [line.strip() for line in (ROOT / ".ci/run").read_text().splitlines() if not line.startswith("#")]
    ci_installs = [re.sub(r"^python -m pip install (-q )?", "", line) for line in ci if "pip install" in line]
    assert ci_installs == installs  # the core first, then [test], as a user's two commands do
    assert tests and tests[0] in ci
