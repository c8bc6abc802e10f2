"""Start and stop a private JupyterLab server: 127.0.0.1, a random token, fresh settings, stopped by pid.

The browser test drives the lessons through it; a test helper, not part of the package. Everything the
server writes (settings, workspaces, runtime files, its log) lives in one work folder, so a run never
touches the user's own Jupyter set-up:

    with start_lab(LabOptions(notebook_dir="notebooks", environment=env)) as server:
        print(server.notebook_url("05_attention_maps.ipynb"))   # open it in a browser

The server runs in its own process group (session). `LabServer.stop` ends that group and every process
the server started (kernels run in sessions of their own), first politely, then by force.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from densemtl_lab.atomic import write_json_atomic

_PROC = Path("/proc")

#: Lab settings that keep the page quiet and offline: no news toast, no update check, no extension manager
#: (it asks PyPI for extensions).
QUIET_SETTINGS: dict[str, dict[str, Any]] = {
    "@jupyterlab/apputils-extension:notification": {"fetchNews": "false", "checkForUpdates": False},
    "@jupyterlab/extensionmanager-extension:plugin": {"enabled": False},
}


class LabServerError(RuntimeError):
    """JupyterLab could not be started as asked."""


class PortInUseError(LabServerError):
    """The requested port on 127.0.0.1 is taken by another program."""


class KernelNotFoundError(LabServerError):
    """A kernel the notebooks need is not installed where the server looks for kernels."""


class LabStartError(LabServerError):
    """The server exited or did not answer in time (its log says why)."""


@dataclass
class LabOptions:
    """How to start JupyterLab.

    `environment` is the server's environment, which its kernels inherit (None: this process's).
    `kernels` must be installed (the kernelspec names the notebooks ask for). `settings` holds
    JupyterLab settings by plugin id, written into a fresh settings folder on top of QUIET_SETTINGS.
    `workdir` holds settings, workspaces, runtime files and `server.log` (None: a new temp folder).
    """

    notebook_dir: str | os.PathLike
    port: int = 0  # 0: any free port
    kernels: tuple[str, ...] = ("python3",)
    environment: Mapping[str, str] | None = None
    settings: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    workdir: str | os.PathLike | None = None
    startup_timeout: float = 60.0
    python: str = sys.executable


@dataclass
class LabServer:
    """A running JupyterLab: its address, token, process and log. Stop it with `stop()` or `with`."""

    port: int
    token: str
    process: subprocess.Popen
    workdir: Path
    log_path: Path
    stopped: bool = field(default=False, init=False)

    @property
    def url(self) -> str:
        """The server's base address, e.g. http://127.0.0.1:8888."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def process_group(self) -> int:
        """The server's process group id (its pid: it leads a session of its own)."""
        return self.process.pid

    def notebook_url(self, path: str, fresh_workspace: bool = False) -> str:
        """The address that opens `path` (relative to the notebook folder) in JupyterLab, token included.

        `fresh_workspace` empties the saved layout first, so `path` is the only open document.
        """
        reset = "reset&" if fresh_workspace else ""
        return f"{self.url}/lab/tree/{urllib.parse.quote(path)}?{reset}token={self.token}"

    def log(self) -> str:
        """Everything the server has written to its log so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.is_file() else ""

    def processes(self) -> list[int]:
        """The server's pid and the pids of every live process it started (kernels included)."""
        return [self.process.pid, *_descendants(self.process.pid)]

    def stop(self, grace: float = 10.0) -> list[int]:
        """End the server, its process group and its kernels: SIGTERM, then SIGKILL after `grace` seconds.

        Safe to call more than once. Returns the pids that were stopped (all gone on return).
        """
        if self.stopped:  # the group id may belong to someone else by now
            return []
        self.stopped = True
        started = self.processes() if self.process.poll() is None else []
        _signal_group(self.process_group, signal.SIGTERM)
        try:
            self.process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            _signal_group(self.process_group, signal.SIGKILL)
            self.process.wait()
        _signal_group(self.process_group, signal.SIGKILL)  # helpers left in the group
        for pid in _wait_gone(started, grace):  # kernels end when the server shuts them down
            _signal_pid(pid, signal.SIGKILL)
        _wait_gone(started, grace)
        return started

    def __enter__(self) -> LabServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def start_lab(options: LabOptions) -> LabServer:
    """Start JupyterLab as `options` say and wait until it answers; stop it again if it does not.

    Raises PortInUseError, KernelNotFoundError or LabStartError with a one-line message naming the fix.
    """
    notebook_dir = Path(options.notebook_dir).resolve()
    if not notebook_dir.is_dir():
        raise LabStartError(f"notebook_dir={str(notebook_dir)!r} is not a folder; give the folder of the notebooks")
    workdir = Path(options.workdir or tempfile.mkdtemp(prefix="densemtl-lab-")).resolve()
    port = options.port or free_port()
    _check_port_free(port)
    environment = _server_environment(options, workdir)
    _check_kernels(options.kernels, options.python, environment)
    token = secrets.token_hex(24)
    log_path = workdir / "server.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(_command(options.python, notebook_dir, port),
                                   env={**environment, "JUPYTER_TOKEN": token},
                                   stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                   cwd=notebook_dir, start_new_session=True)
    server = LabServer(port, token, process, workdir, log_path)
    try:
        _wait_until_answering(server, options.startup_timeout)
    except BaseException:
        server.stop()
        raise
    return server


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def pid_alive(pid: int) -> bool:
    """Whether process `pid` exists and is not a zombie waiting to be reaped."""
    if _PROC.is_dir():
        return _state(pid) not in (None, "Z", "X")
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def group_alive(group: int) -> bool:
    """Whether any process of process group `group` is still alive (zombies do not count)."""
    if _PROC.is_dir():
        return any(_group_of(pid) == group and pid_alive(pid) for pid, _ in _process_table())
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _command(python: str, notebook_dir: Path, port: int) -> list[str]:
    """The server's command line; the token goes through JUPYTER_TOKEN, never here (`ps` shows argv)."""
    command = [python, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
               "--ServerApp.port_retries=0", f"--ServerApp.root_dir={notebook_dir}"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:  # as root, Jupyter refuses to start without it
        command.append("--allow-root")
    return command


def _server_environment(options: LabOptions, workdir: Path) -> dict[str, str]:
    """The server's environment, with Jupyter's config, runtime, settings and workspaces in `workdir`."""
    environment = dict(os.environ if options.environment is None else options.environment)
    folders = {"JUPYTER_CONFIG_DIR": "config", "JUPYTER_RUNTIME_DIR": "runtime",
               "JUPYTERLAB_SETTINGS_DIR": "settings", "JUPYTERLAB_WORKSPACES_DIR": "workspaces"}
    for variable, name in folders.items():
        (workdir / name).mkdir(parents=True, exist_ok=True)
        environment[variable] = str(workdir / name)
    _write_settings(workdir / "settings", {**QUIET_SETTINGS, **options.settings})
    return environment


def _write_settings(settings_dir: Path, settings: Mapping[str, Mapping[str, Any]]) -> None:
    """One `<extension>/<plugin>.jupyterlab-settings` JSON file per plugin id `extension:plugin`."""
    for plugin_id, values in settings.items():
        extension, _, plugin = plugin_id.rpartition(":")
        if not extension or not plugin:
            raise LabStartError(f"settings key {plugin_id!r} is not a plugin id; use e.g. "
                                f"'@jupyterlab/notebook-extension:tracker'")
        path = settings_dir / extension / f"{plugin}.jupyterlab-settings"
        write_json_atomic(path, dict(values))


def _check_kernels(kernels: tuple[str, ...], python: str, environment: Mapping[str, str]) -> None:
    """Ask Jupyter (with the server's environment) which kernels exist; fail on a missing one."""
    listing = subprocess.run([python, "-m", "jupyter", "kernelspec", "list", "--json"], env=environment,
                             capture_output=True, text=True, check=False)
    if listing.returncode != 0:
        raise LabStartError(f"`{python} -m jupyter kernelspec list` failed ({listing.stderr.strip()[-200:]}); "
                            f"install the package with `make setup`")
    installed = sorted(json.loads(listing.stdout)["kernelspecs"])
    missing = [name for name in kernels if name not in installed]
    if missing:
        raise KernelNotFoundError(
            f"kernel {missing[0]!r} is not installed for {python} (installed: {', '.join(installed) or 'none'}); "
            f"install it with `{python} -m ipykernel install --sys-prefix --name {missing[0]}`")


def _check_port_free(port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            raise PortInUseError(f"port {port} on 127.0.0.1 is in use by another program; stop it or pass "
                                 f"port=0 to use a free port") from None


def _wait_until_answering(server: LabServer, timeout: float) -> None:
    """Poll the server's status API until it answers 200; fail early if the process exits."""
    request = urllib.request.Request(f"{server.url}/api/status", headers={"Authorization": f"token {server.token}"})
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            log = server.log()
            if "is already in use" in log:
                raise PortInUseError(f"port {server.port} on 127.0.0.1 was taken while JupyterLab started; "
                                     f"stop the other program or pass port=0 to use a free port")
            raise LabStartError(f"JupyterLab exited with code {server.process.returncode} before answering; "
                                f"see {server.log_path}: {log.strip()[-300:]}")
        try:
            with urllib.request.urlopen(request, timeout=2) as answer:
                if answer.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.2)
    raise LabStartError(f"JupyterLab did not answer on {server.url} within {timeout:.0f} s; see {server.log_path} "
                        f"or raise startup_timeout")


def _wait_gone(pids: list[int], timeout: float) -> list[int]:
    """Wait up to `timeout` seconds for `pids` to end; return those still alive."""
    deadline = time.monotonic() + timeout
    while (alive := [pid for pid in pids if pid_alive(pid)]) and time.monotonic() < deadline:
        time.sleep(0.1)
    return alive


def _signal_group(group: int, sig: signal.Signals) -> None:
    try:
        os.killpg(group, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _signal_pid(pid: int, sig: signal.Signals) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _stat_fields(pid: int) -> list[str] | None:
    """/proc/<pid>/stat after the command name: state, ppid, pgrp, ... (None where /proc lacks it)."""
    try:
        text = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    return text.rpartition(")")[2].split()


def _state(pid: int) -> str | None:
    fields = _stat_fields(pid)
    return fields[0] if fields else None


def _group_of(pid: int) -> int | None:
    fields = _stat_fields(pid)
    return int(fields[2]) if fields else None


def _process_table() -> list[tuple[int, int]]:
    """(pid, parent pid) of every process /proc shows (empty where there is no /proc: macOS)."""
    table = []
    for entry in _PROC.glob("[0-9]*"):
        fields = _stat_fields(int(entry.name))
        if fields:
            table.append((int(entry.name), int(fields[1])))
    return table


def _descendants(pid: int) -> list[int]:
    """Every live process below `pid` in the process tree (children, grandchildren, ...)."""
    children: dict[int, list[int]] = {}
    for child, parent in _process_table():
        children.setdefault(parent, []).append(child)
    found, frontier = [], [pid]
    while frontier:
        below = children.get(frontier.pop(), [])
        found += below
        frontier += below
    return found
