"""Launching several processes (`launch/local.sh`, `wm_jax.sharding.initialize`) when something is
wrong: settings out of range, a coordinator port in use, a peer that never comes, processes that
crash, a launcher stopped or killed. Each ends in one line naming the cause, and nothing hangs or
spins. The processes here are small stand-ins (`sh`, a few lines of Python) where the command
itself does not matter; timeouts are hang guards only.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from wm_jax.cli import main

from conftest import REPO

LAUNCH = str(REPO / "launch" / "local.sh")


def _environment(**settings: str) -> dict:
    """This environment without launch settings, with these, and this checkout's wm_jax first."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WM_JAX_") and k != "XLA_FLAGS"}
    return {**env, "PYTHONPATH": str(REPO), **settings}


def _busy_port() -> tuple[socket.socket, int]:
    """A port with a listener on it (close the socket when done)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    return listener, listener.getsockname()[1]


@pytest.mark.parametrize(
    "name, value, expected",
    [
        ("WM_JAX_CPU_DEVICES", "0", "expected an integer in [1, 1024], found '0'"),
        ("WM_JAX_CPU_DEVICES", "abc", "expected an integer in [1, 1024], found 'abc'"),
        ("WM_JAX_CPU_DEVICES", "-1", "expected an integer in [1, 1024], found '-1'"),
        ("WM_JAX_PORT", "70000", "expected an integer in [1, 65535], found '70000'"),
        ("WM_JAX_PORT", "http", "expected an integer in [1, 65535], found 'http'"),
        ("WM_JAX_PORT", "busy", "is in use or not ours to open; expected a free port"),
        ("WM_JAX_HEARTBEAT_SECONDS", "0", "expected a whole number >= 1, found '0'"),
        ("WM_JAX_CONNECT_TIMEOUT_SECONDS", "1.5", "expected a whole number >= 1, found '1.5'"),
    ],
)
def test_launcher_settings_are_checked_before_any_process_starts(tmp_path, name, value, expected):
    listener, port = _busy_port()
    with listener:
        value = str(port) if value == "busy" else value
        result = subprocess.run(
            ["bash", LAUNCH, "2", "touch", str(tmp_path / "started")],
            env=_environment(**{name: value}),
            capture_output=True,
            text=True,
            timeout=60,
        )
    lines = result.stderr.splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert lines[0].startswith(f"launch/local.sh: error: {name}: ") and expected in lines[0], lines[0]
    assert not (tmp_path / "started").exists()


@pytest.mark.parametrize(
    "command, code",
    [
        ("kill -SEGV $$", 139),  # both crash before the launcher waits: it spun here, waiting for no one
        ('[ "$WM_JAX_PROCESS_ID" = 1 ] && kill -SEGV $$; exit 0', 139),
        ('[ "$WM_JAX_PROCESS_ID" = 0 ] && exit 3; exec sleep 60', 3),  # the sleeper is stopped
        ("exit 0", 0),
    ],
)
def test_launcher_exits_when_its_processes_have(command, code):
    result = subprocess.run(
        ["bash", LAUNCH, "2", "sh", "-c", command], env=_environment(), capture_output=True, text=True, timeout=25
    )
    assert result.returncode == code, result.stderr


def test_sigterm_to_the_launcher_stops_its_processes():
    launcher = subprocess.Popen(["bash", LAUNCH, "2", "sleep", "60"], env=_environment(), stderr=subprocess.PIPE)
    deadline = time.time() + 20
    while len(_children(launcher.pid)) < 2:  # both started (the launcher's traps are set by then)
        assert time.time() < deadline and launcher.poll() is None
        time.sleep(0.05)
    launcher.send_signal(signal.SIGTERM)
    _, stderr = launcher.communicate(timeout=25)
    assert launcher.returncode == 128 + signal.SIGTERM, stderr


def _children(pid: int) -> list[str]:
    return subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()


# A stand-in for a wm-jax process: follows the launcher as `sharding.initialize` does, says it is
# ready, then "publishes" after 60 s unless a SIGTERM stops it first.
FOLLOWER = """
import signal, sys, time
from pathlib import Path
from wm_jax import sharding
out = Path(sys.argv[1]) / sys.argv[2]
signal.signal(signal.SIGTERM, lambda *_: (out.with_suffix(".stopped").touch(), sys.exit(143)))
sharding._follow_launcher()
out.with_suffix(".ready").touch()
time.sleep(60)
out.with_suffix(".published").touch()
"""


def test_processes_of_a_killed_launcher_stop_without_publishing(tmp_path):
    """SIGKILL to local.sh: its processes get SIGTERM and publish nothing. Process 0 is the
    launcher's child (the kernel signals it), process 1 its grandchild under a wrapping shell (a
    thread that watches the launcher signals it)."""
    script = tmp_path / "follower.py"
    script.write_text(FOLLOWER)
    run = f"{sys.executable} {script} {tmp_path} p$WM_JAX_PROCESS_ID"
    command = ["sh", "-c", f'if [ "$WM_JAX_PROCESS_ID" = 0 ]; then exec {run}; else {run}; true; fi']
    launcher = subprocess.Popen(["bash", LAUNCH, "2", *command], env=_environment(), stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while len(list(tmp_path.glob("*.ready"))) < 2:
        assert time.time() < deadline and launcher.poll() is None, "the processes never started"
        time.sleep(0.05)
    launcher.kill()
    launcher.wait()
    while len(list(tmp_path.glob("*.stopped"))) < 2:
        assert time.time() < deadline + 20, sorted(p.name for p in tmp_path.iterdir())
        time.sleep(0.05)
    assert not list(tmp_path.glob("*.published"))


# ---------------------------------------------------------------------------------------------
# The runtime's settings in each process (started by hand, or by another launcher).
# ---------------------------------------------------------------------------------------------
def _gwas_argv(tmp_path: Path) -> list[str]:
    return ["gwas", "--bfile", str(tmp_path / "g"), "--pheno", "p", "--covar", "c", "--out", str(tmp_path / "o")]


@pytest.mark.parametrize(
    "settings, expected",
    [
        ({"WM_JAX_CPU_DEVICES": "0"}, "WM_JAX_CPU_DEVICES: expected an integer in [1, 1024], found '0'"),
        ({"WM_JAX_CPU_DEVICES": "abc"}, "WM_JAX_CPU_DEVICES: expected an integer in [1, 1024], found 'abc'"),
        ({"WM_JAX_CPU_DEVICES": "-1"}, "WM_JAX_CPU_DEVICES: expected an integer in [1, 1024], found '-1'"),
        ({"WM_JAX_COORDINATOR": "127.0.0.1:99999"}, "WM_JAX_COORDINATOR: expected HOST:PORT with a port in"),
        ({"WM_JAX_COORDINATOR": "localhost"}, "WM_JAX_COORDINATOR: expected HOST:PORT with a port in"),
        ({"WM_JAX_CONNECT_TIMEOUT_SECONDS": "soon"}, "WM_JAX_CONNECT_TIMEOUT_SECONDS: expected a whole number >= 1"),
        ({"WM_JAX_COORDINATOR": "busy"}, "cannot be opened (Address already in use); expected a free port"),
    ],
)
def test_runtime_settings_are_one_line_naming_them(tmp_path, capsys, monkeypatch, settings, expected):
    listener, port = _busy_port()
    with listener:
        monkeypatch.setenv("WM_JAX_COORDINATOR", "127.0.0.1:1")
        monkeypatch.setenv("WM_JAX_NUM_PROCESSES", "2")
        monkeypatch.setenv("WM_JAX_PROCESS_ID", "0")
        for name, value in settings.items():
            monkeypatch.setenv(name, f"127.0.0.1:{port}" if value == "busy" else value)
        code = main(_gwas_argv(tmp_path))
    err = capsys.readouterr().err
    assert code == 2 and err.splitlines() == [err.strip()] and err.startswith("wm-jax gwas: error: "), err
    assert expected in err
    assert list(tmp_path.iterdir()) == []


def test_a_peer_that_never_comes_is_an_error_after_the_timeout(tmp_path):
    """Process 0 of two, started alone: after WM_JAX_CONNECT_TIMEOUT_SECONDS one line, exit 2 (JAX
    alone waits 300 s and then aborts with a native stack trace; so does a process 1 whose
    coordinator never comes, which the same watchdog ends)."""
    free = socket.socket()
    free.bind(("127.0.0.1", 0))
    port = free.getsockname()[1]
    free.close()
    env = _environment(
        WM_JAX_COORDINATOR=f"127.0.0.1:{port}",
        WM_JAX_NUM_PROCESSES="2",
        WM_JAX_PROCESS_ID="0",
        WM_JAX_CONNECT_TIMEOUT_SECONDS="2",
    )
    result = subprocess.run(
        [sys.executable, "-m", "wm_jax.cli", *_gwas_argv(tmp_path)], env=env, capture_output=True, text=True, timeout=90
    )
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("wm-jax gwas: error: WM_JAX_CONNECT_TIMEOUT_SECONDS: "), lines
    assert "not every one of 2 processes joined" in lines[0] and list(tmp_path.iterdir()) == []
