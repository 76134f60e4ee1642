"""conf/ (the Hydra configs, at the top of the repo where users look for them) ships inside the installed
package as `pipeline/conf`, so `pip install .` and a wheel run from any directory. Everything else is in
pyproject.toml."""
from setuptools import find_namespace_packages, setup

setup(
    packages=find_namespace_packages(include=["pipeline*", "stages*", "hydra_plugins*"], exclude=["*.__pycache__"])
    + ["pipeline.conf"],
    package_dir={"pipeline.conf": "conf"},
    package_data={"pipeline.conf": ["*.yaml", "**/*.yaml"]},
)
