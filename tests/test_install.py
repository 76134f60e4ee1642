"""The package installs like a library: `pip install .` or a wheel, into a fresh virtual environment, runs from any
directory, with its configs inside the package (conf/ ships as pipeline/conf)."""
import os
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

from pipeline import results
from tests.conftest import FAST, ROOT

pytestmark = pytest.mark.slow


def fresh_venv(where: Path) -> Path:
    """A new virtual environment that sees this one's dependencies (a .pth naming its site-packages) but not its
    editable install of the project, which only this environment's own site-packages processing would load."""
    venv.create(where, with_pip=False)
    ask = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    site = Path(subprocess.check_output([str(where / "bin/python"), "-c", ask], text=True).strip())
    (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return site


def source_copy(tmp_path: Path) -> Path:
    """The checkout without its local state: setuptools builds in the source tree (build/, *.egg-info), so two
    builds of one tree race, and a stale build/ could ship files the tree no longer has."""
    return Path(shutil.copytree(ROOT, tmp_path / "src", ignore=shutil.ignore_patterns(
        ".git", ".venv", ".whl", "build", "*.egg-info", "__pycache__", ".pytest_cache", "outputs")))


def install(source: Path, site: Path, tmp_path: Path, how: str) -> None:
    pip = [sys.executable, "-m", "pip", "-q"]
    if how == "wheel":
        subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "dist"), "."],
                       cwd=source, check=True, capture_output=True, timeout=300)
        target = [str(next((tmp_path / "dist").glob("*.whl")))]
    else:
        target = ["."]
    subprocess.run([*pip, "install", "--no-deps", "--no-build-isolation", "--target", str(site), *target],
                   cwd=source, check=True, capture_output=True, timeout=300)


def run(python: Path, args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([str(python), *args], cwd=cwd, env={**env, "PYTHONUNBUFFERED": "1"}, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.parametrize("how", ["wheel", "pip install ."])
def test_installed_package_runs_from_any_directory(tmp_path, how):
    site = fresh_venv(tmp_path / "venv")
    install(source_copy(tmp_path), site, tmp_path, how)
    python, elsewhere = tmp_path / "venv/bin/python", tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = run(python, ["-c", "import pipeline.run.app as a; print(a.CONF_DIR)"], elsewhere)
    assert where.stdout.strip() == str(site / "pipeline" / "conf"), where.stderr
    proc = run(python, ["-m", "pipeline", *FAST], elsewhere)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert list(results.load(elsewhere / "outputs").runs.status) == ["ok"]
    # a user's config dir layers on top of the packaged configs
    (elsewhere / "mine/model").mkdir(parents=True)
    (elsewhere / "mine/model/small.yaml").write_text("name: tiny_cnn\nsource: builtin\ninput_shape: [3, 16, 16]\n")
    mine = run(python, ["-m", "pipeline", "--config-dir", "mine", "model=small", "hydra.run.dir=mine-run", *FAST],
               elsewhere)
    assert mine.returncode == 0, mine.stdout[-2000:] + mine.stderr[-2000:]
    assert results.load(elsewhere / "mine-run").runs.iloc[0].export_input_shape == "3x16x16"


def core_closure() -> list:
    """The installed distributions the core package needs: pyproject's `dependencies` and theirs, recursively, with
    the extras each requirement names, for this interpreter (markers evaluated), and none of the project's extras."""
    import importlib.metadata as metadata
    import tomllib

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    found: dict[str, object] = {}
    todo = [Requirement(r) for r in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]]
    seen: set[tuple[str, frozenset]] = set()
    while todo:
        req = todo.pop()
        key = (canonicalize_name(req.name), frozenset(req.extras))
        if key in seen:
            continue
        seen.add(key)
        dist = found.setdefault(key[0], metadata.distribution(req.name))
        for text in dist.requires or ():
            sub = Requirement(text)
            if sub.marker is None or any(sub.marker.evaluate({"extra": e}) for e in ("", *req.extras)):
                todo.append(sub)
    return list(found.values())


def core_only_venv(where: Path) -> Path:
    """A fresh virtual environment that sees exactly the core closure: every file its distributions installed,
    linked into the new site-packages (no download, and none of the extras: Ray, Optuna, MLflow, datasets...)."""
    venv.create(where, with_pip=False)
    ask = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    site = Path(subprocess.check_output([str(where / "bin/python"), "-c", ask], text=True).strip())
    for dist in core_closure():
        base = Path(dist.locate_file(""))
        for file in dist.files or ():
            source = base / file
            target = site / file
            if ".." in file.parts or "__pycache__" in file.parts or not source.is_file() or target.exists():
                continue  # scripts installed outside site-packages, byte code, namespace files shared by two
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(source)
    return site


def test_the_core_package_alone_runs_the_default_job(tmp_path):
    """README's first command installs the core only (`pip install torch==2.13.0 -e .`): the default job runs with
    nothing from the extras."""
    site = core_only_venv(tmp_path / "venv")
    (site / "checkout.pth").write_text(f"{ROOT}\n")  # the project itself: installing it is the test above's
    python, elsewhere = tmp_path / "venv/bin/python", tmp_path / "elsewhere"
    elsewhere.mkdir()
    absent = run(python, ["-c", "import importlib.util as u; print([m for m in ('ray', 'optuna', 'mlflow', 'datasets', "
                                "'transformers', 'pytest', 'hydra_plugins.hydra_joblib_launcher') if u.find_spec(m)])"],
                 elsewhere)
    assert absent.stdout.strip() == "[]", absent.stdout + absent.stderr  # the extras are really not there
    proc = run(python, ["-m", "pipeline", *FAST], elsewhere)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    runs = results.load(elsewhere / "outputs").runs
    assert list(runs.status) == ["ok"] and runs.model.item() == "digits"
