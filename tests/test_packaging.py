"""The packaging stays consistent: pyproject ranges, the pinned constraints, environment.yml, Makefile."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            pins[canonicalize_name(name)] = version
    return pins


def test_every_pin_satisfies_the_pyproject_range():
    project = _pyproject()["project"]
    requirements = [Requirement(text) for text in project["dependencies"]]
    requirements += [Requirement(text) for text in project["optional-dependencies"]["dev"]]
    pins = _pins()
    for requirement in requirements:
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement.name} is in pyproject.toml but not pinned in constraints.txt"
        assert requirement.specifier.contains(pins[name]), (
            f"constraints.txt pins {name}=={pins[name]} outside pyproject's {requirement}")


def test_torch_pair_that_resolves_offline_is_admitted():
    pins = _pins()
    assert (pins["torch"], pins["torchvision"]) == ("2.14.1", "0.29.1")


def test_environment_yml_installs_the_package_with_the_same_extras_as_make_setup():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    deps = env["dependencies"]
    assert "python=3.11" in deps
    pip_section = next(item["pip"] for item in deps if isinstance(item, dict) and "pip" in item)
    assert "-c constraints.txt" in pip_section
    editable = [line for line in pip_section if line.startswith("-e ")]
    assert len(editable) == 1
    extras = set(re.search(r"\[(.*)\]", editable[0]).group(1).split(","))
    assert extras == set(_pyproject()["project"]["optional-dependencies"])
    makefile = (ROOT / "Makefile").read_text()
    make_extras = set(re.search(r'-e "\.\[(.*?)\]"', makefile).group(1).split(","))
    assert make_extras == extras


def test_readme_test_command_is_what_ci_runs():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^\s*make test\s*$", readme, re.MULTILINE)
    assert re.search(r"^make test\s*$", ci, re.MULTILINE)
    for variable in ("HF_HUB_OFFLINE=1", "MPLBACKEND=Agg"):
        assert variable in ci
