"""Running `shareflow` as a user does, for the tests that need a real server or the CLI."""

import contextlib
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

SHAREFLOW = str(Path(sys.executable).parent / "shareflow")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def shareflow(cwd, env, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """One `shareflow` command, its output captured."""
    return subprocess.run([SHAREFLOW, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def wait_healthy(url: str, process: subprocess.Popen, log: Path, seconds: float = 30) -> None:
    """Until /healthz answers; fails with the server's log if it exits or never comes up."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"shareflow serve did not come up: {log.read_text(errors='replace')[-2000:]}")
        time.sleep(0.05)


@contextlib.contextmanager
def serving(cwd: Path, env: dict, port: int | None = None):
    """`shareflow serve` on 127.0.0.1 until the block ends: its base URL."""
    port = port or free_port()
    log_path = Path(cwd) / f"serve-{port}.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen([SHAREFLOW, "serve", "--host", "127.0.0.1", "--port", str(port)], cwd=cwd, env=env, stdout=log, stderr=log)
        url = f"http://127.0.0.1:{port}"
        try:
            wait_healthy(url, process, log_path)
            yield url
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
