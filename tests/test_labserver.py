"""Tests of tests/labserver.py: start JupyterLab privately, clear errors, and stop with nothing left behind."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import labserver
import pytest
from labserver import (KernelNotFoundError, LabOptions, LabServer, LabStartError, PortInUseError, group_alive,
                       pid_alive, start_lab)

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"

#: A stand-in server: ignores SIGTERM and starts a "kernel" in a session of its own, as Jupyter does.
STUBBORN_SERVER = """
import signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
kernel = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True)
print(kernel.pid, flush=True)
time.sleep(600)
"""


def _status(url: str, token: str | None) -> int:
    headers = {"Authorization": f"token {token}"} if token else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(f"{url}/api/status", headers=headers), timeout=5) as answer:
            return answer.status
    except urllib.error.HTTPError as error:
        return error.code


@pytest.fixture
def started_servers(monkeypatch) -> list[LabServer]:
    """Every LabServer that start_lab creates, also those it stops again before raising."""
    started = []
    monkeypatch.setattr(labserver, "LabServer", lambda *args: started.append(LabServer(*args)) or started[-1])
    return started


@pytest.fixture
def listening_socket():
    """A port on 127.0.0.1 held by another program."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


def test_server_answers_with_its_token_uses_quiet_settings_and_stops_completely(tmp_path):
    options = LabOptions(NOTEBOOKS, workdir=tmp_path, settings={"@jupyterlab/notebook-extension:tracker":
                                                                {"windowingMode": "none"}})
    with start_lab(options) as server:
        assert _status(server.url, server.token) == 200
        assert _status(server.url, None) == 403
        assert server.notebook_url("a b.ipynb") == f"{server.url}/lab/tree/a%20b.ipynb?token={server.token}"
        assert server.notebook_url("x.ipynb", fresh_workspace=True).endswith(f"x.ipynb?reset&token={server.token}")
        assert "--allow-root" in server.process.args or labserver.os.geteuid() != 0
        command_line = Path(f"/proc/{server.process.pid}/cmdline").read_bytes().decode()
        assert server.token not in command_line  # any local user could read it with `ps`
        running = server.processes()
    assert server.process.returncode is not None
    assert not group_alive(server.process_group)
    assert not any(pid_alive(pid) for pid in running)
    news = json.loads((tmp_path / "settings/@jupyterlab/apputils-extension/notification.jupyterlab-settings")
                      .read_text())
    assert news == {"fetchNews": "false", "checkForUpdates": False}
    tracker = tmp_path / "settings/@jupyterlab/notebook-extension/tracker.jupyterlab-settings"
    assert json.loads(tracker.read_text()) == {"windowingMode": "none"}
    assert "Jupyter Server" in server.log()
    assert server.stop() == []  # a second stop does nothing


def test_busy_port_is_refused_before_starting(listening_socket, tmp_path):
    with pytest.raises(PortInUseError, match=f"port {listening_socket} on 127.0.0.1 is in use.*port=0"):
        start_lab(LabOptions(NOTEBOOKS, port=listening_socket, workdir=tmp_path))
    assert not (tmp_path / "server.log").exists()


def test_port_taken_during_start_gives_the_same_message_and_no_process_is_left(listening_socket, tmp_path,
                                                                              started_servers, monkeypatch):
    monkeypatch.setattr(labserver, "_check_port_free", lambda port: None)  # the port is taken after the check
    with pytest.raises(PortInUseError, match=f"port {listening_socket} on 127.0.0.1 was taken"):
        start_lab(LabOptions(NOTEBOOKS, port=listening_socket, workdir=tmp_path))
    assert not group_alive(started_servers[0].process_group)


def test_missing_kernel_names_the_kernel_and_the_install_command(tmp_path):
    with pytest.raises(KernelNotFoundError, match=r"kernel 'no-such-kernel' is not installed .*installed: .*"
                                                  r"python3.*ipykernel install --sys-prefix --name no-such-kernel"):
        start_lab(LabOptions(NOTEBOOKS, kernels=("python3", "no-such-kernel"), workdir=tmp_path))


@pytest.mark.parametrize("script, timeout, message", [
    ("import sys; print('config is broken'); sys.exit(3)", 30.0, "exited with code 3.*config is broken"),
    ("import time; time.sleep(600)", 1.0, "did not answer .* within 1 s"),
])
def test_a_server_that_fails_to_answer_is_stopped_and_explained(script, timeout, message, tmp_path,
                                                                started_servers, monkeypatch):
    monkeypatch.setattr(labserver, "_command", lambda *args: [sys.executable, "-c", script])
    with pytest.raises(LabStartError, match=message):
        start_lab(LabOptions(NOTEBOOKS, workdir=tmp_path, startup_timeout=timeout))
    assert started_servers[0].stopped and not group_alive(started_servers[0].process_group)


@pytest.mark.parametrize("options, message", [
    (LabOptions("no/such/folder"), "notebook_dir=.*no/such/folder.* is not a folder"),
    (LabOptions(NOTEBOOKS, settings={"notification": {}}), "settings key 'notification' is not a plugin id"),
])
def test_bad_options_are_named(options, message, tmp_path):
    options.workdir = tmp_path
    with pytest.raises(LabStartError, match=message):
        start_lab(options)


def test_stop_kills_a_server_that_ignores_sigterm_and_the_kernels_it_started(tmp_path):
    process = subprocess.Popen([sys.executable, "-c", STUBBORN_SERVER], stdout=subprocess.PIPE, text=True,
                               start_new_session=True)
    kernel = int(process.stdout.readline())
    server = LabServer(0, "", process, tmp_path, tmp_path / "server.log")
    assert pid_alive(kernel) and group_alive(server.process_group)
    stopped = server.stop(grace=0.5)
    process.stdout.close()
    assert set(stopped) == {process.pid, kernel}
    assert process.returncode == -9
    assert not pid_alive(kernel)
    assert not group_alive(server.process_group)


@pytest.mark.parametrize("uid, allowed", [(0, True), (1000, False)])
def test_allow_root_only_as_root(uid, allowed, monkeypatch):
    monkeypatch.setattr(labserver.os, "geteuid", lambda: uid)
    command = labserver._command("python", Path("/nb"), 8123)
    assert ("--allow-root" in command) == allowed
    assert {"--ip=127.0.0.1", "--port=8123", "--ServerApp.port_retries=0", "--no-browser"} <= set(command)
