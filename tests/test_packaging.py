"""The packaging stays consistent: pyproject ranges, the pinned constraints, environment.yml, Makefile."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
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
    for extra_step in ("apt-get", "pip ", "playwright", "pytest", "chromium"):  # the README's command alone
        assert extra_step not in ci, f".ci/run does {extra_step!r} besides make test"


def test_make_test_prepares_the_browser_itself():
    makefile = (ROOT / "Makefile").read_text()
    test_rule = re.search(r"^test:(.*)$", makefile, re.MULTILINE).group(1).split()
    assert "browser" in test_rule
    assert re.search(r"^browser:\n\t@?bash tests/install_chromium\.sh$", makefile, re.MULTILINE)


def test_chromium_installer_explains_and_succeeds_when_it_cannot_install(tmp_path):
    tools = tmp_path / "bin"  # a PATH with `id` but neither apt-get nor sudo
    tools.mkdir()
    (tools / "id").symlink_to(shutil.which("id"))
    finished = subprocess.run(["/bin/bash", str(ROOT / "tests" / "install_chromium.sh")], capture_output=True,
                              text=True, env={"PATH": str(tools), "DENSEMTL_CHROMIUM": str(tmp_path / "none")})
    assert finished.returncode == 0
    assert "they will skip" in finished.stdout and "DENSEMTL_CHROMIUM" in finished.stdout


def test_browser_tests_skip_with_a_reason_without_chromium(tmp_path):
    environment = {**os.environ, "DENSEMTL_CHROMIUM": str(tmp_path / "no-chromium")}
    finished = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rs", "-q",
                               str(ROOT / "tests" / "test_browser.py")], capture_output=True, text=True,
                              env=environment, cwd=ROOT)
    assert finished.returncode in (0, 5), finished.stdout[-2000:]  # 5: the module skipped, nothing else ran
    assert re.search(r"^1 skipped in", finished.stdout, re.MULTILINE)
    assert re.search(r"SKIPPED .*no Chromium at .*no-chromium: install it", finished.stdout)
    assert "error" not in finished.stdout.lower()


def test_make_lab_passes_the_token_through_the_environment_not_the_command_line(tmp_path):
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").symlink_to(sys.executable)
    jupyter = venv / "bin" / "jupyter"  # records what `make lab` hands to JupyterLab
    jupyter.write_text('#!/bin/sh\nprintf "%s\\n" "$@" > "$0.args"\nprintf "%s" "$JUPYTER_TOKEN" > "$0.token"\n')
    jupyter.chmod(0o755)
    (venv / ".densemtl-lab-installed").touch()  # newer than pyproject.toml: `setup` has nothing to do
    finished = subprocess.run(["make", "-C", str(ROOT), "lab", f"VENV={venv}"], capture_output=True, text=True)
    assert finished.returncode == 0, finished.stderr
    arguments = (venv / "bin" / "jupyter.args").read_text().split()
    token = (venv / "bin" / "jupyter.token").read_text()
    assert re.fullmatch(r"[0-9a-f]{48}", token)
    assert arguments[:4] == ["lab", "--no-browser", "--ip=127.0.0.1", "--notebook-dir=notebooks"]
    assert not [argument for argument in arguments if "token" in argument.lower() or token in argument]
    assert token not in finished.stdout + finished.stderr  # make echoes its commands


def test_every_shipped_resource_is_in_the_package_data():
    from fnmatch import fnmatch

    patterns = _pyproject()["tool"]["setuptools"]["package-data"]["densemtl_lab"]
    package = ROOT / "densemtl_lab"
    shipped = [path.relative_to(package).as_posix() for path in (package / "resources").rglob("*") if path.is_file()]
    assert "resources/baselines.json" in shipped
    # setuptools' package-data globs: "*" stays within one folder, as fnmatch's does not, so compare per part
    missing = [name for name in shipped
               if not any(len(name.split("/")) == len(pattern.split("/")) and fnmatch(name, pattern)
                          for pattern in patterns)]
    assert not missing, f"not in pyproject's package-data, so missing from the wheel: {missing}"
