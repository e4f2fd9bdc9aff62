"""Package discovery for the folder → package mapping (pyproject holds all metadata)."""

from setuptools import find_packages, setup

PACKAGE_DIRS = {
    "flowsci": "core",
    "flowsci.domains": "domains",
    "flowsci.benchmarks": "benchmarks",
    "flowsci.configs": "configs",
}


def _packages() -> list[str]:
    pkgs = []
    for name, folder in PACKAGE_DIRS.items():
        pkgs.append(name)
        pkgs += [f"{name}.{sub}" for sub in find_packages(folder)]
    return pkgs


setup(package_dir=PACKAGE_DIRS, packages=_packages())
