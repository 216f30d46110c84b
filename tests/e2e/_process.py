"""Run the installed `labelloop` command as a real process, as an operator would."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

STARTUP_TIMEOUT_S = 20.0
SHUTDOWN_TIMEOUT_S = 10.0


def labelloop_command() -> list[str]:
    """The console script installed next to this interpreter (the venv's), else `python -m service.cli`."""
    script = shutil.which("labelloop", path=str(Path(sys.executable).parent))
    return [script] if script else [sys.executable, "-m", "service.cli"]


def clean_env(**labelloop: str) -> dict[str, str]:
    """This process's environment without any LABELLOOP_* variable, plus the ones given
    (keys without the prefix, case-insensitive)."""
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("LABELLOOP_")}
    env.update({f"LABELLOOP_{k.upper()}": v for k, v in labelloop.items()})
    return env


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    base_url: str
    stdout: Path
    stderr: Path

    def output(self) -> str:
        return f"--- stdout ---\n{self.stdout.read_text()}\n--- stderr ---\n{self.stderr.read_text()}"


def stop(process: subprocess.Popen[bytes]) -> int:
    """SIGTERM, a bounded wait, then SIGKILL; always reaps the process."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=SHUTDOWN_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=SHUTDOWN_TIMEOUT_S)
    return process.returncode


def wait_healthy(server: Server, timeout: float = STARTUP_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    with httpx.Client(base_url=server.base_url, timeout=2.0) as client:
        while True:
            if server.process.poll() is not None:
                raise AssertionError(f"labelloop serve exited with {server.process.returncode}\n{server.output()}")
            try:
                if client.get("/healthz").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"no healthy /healthz within {timeout} s\n{server.output()}")
            time.sleep(0.1)


@contextmanager
def serve(workdir: Path, **labelloop: str) -> Iterator[Server]:
    """`labelloop serve` on a free loopback port, run from `workdir` (so no stray .env is read);
    healthy on entry, stopped and reaped on exit whatever happened."""
    port = free_port()
    out_path, err_path = workdir / "serve.stdout", workdir / "serve.stderr"
    with out_path.open("wb") as out, err_path.open("wb") as err:
        process = subprocess.Popen(
            [*labelloop_command(), "serve", "--host", "127.0.0.1", "--port", str(port)],
            cwd=workdir,
            env=clean_env(**labelloop),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
        )
        try:
            server = Server(process, f"http://127.0.0.1:{port}", out_path, err_path)
            wait_healthy(server)
            yield server
        finally:
            stop(process)
