"""What every figure shares: the machine, free ports, servers that always stop, wrk, result rows."""

from __future__ import annotations

import contextlib
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import httpx

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
OUT_DIR = BENCH_DIR / "out"  # git-ignored: logs, quick results
VENV_BIN = Path(sys.executable).parent
SEED_CONSUMER_BLOCKS = (
    "INSERT OR IGNORE INTO consumer_blocks (network_id, consumer_id, id_block) "
    "SELECT DISTINCT network_id, consumer_id, id_block FROM usage_events"
)
"After events seeded straight into usage_events: the blocks of ids the app notes as it records them."
KEY_PACKAGES = ["strawberry-graphql", "graphql-core", "starlette", "uvicorn", "sqlalchemy", "aiosqlite", "uvloop", "httptools"]


# --- configuration and results ------------------------------------------------------------------


@dataclass
class Config:
    quick: bool
    workdir: Path
    "A fresh temporary directory for this run: databases, keys files, wrk scripts."

    def pick(self, full, quick):
        return quick if self.quick else full


@dataclass
class Row:
    figure: str
    size: str
    measured: str
    floor: str
    ratio: str
    note: str = ""


@dataclass
class Section:
    """What one figure module hands back to the runner."""

    title: str
    method: str
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0


# --- the machine ---------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def versions() -> dict[str, str]:
    found = {}
    for name in KEY_PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "absent"
    return found


def wrk_version() -> str:
    if not shutil.which("wrk"):
        return "absent"
    out = subprocess.run(["wrk", "-v"], capture_output=True, text=True, timeout=10)
    text = (out.stdout + out.stderr).strip().splitlines()
    return text[0].split(" Copyright")[0] if text else "unknown"


def machine() -> dict[str, str]:
    import sqlite3

    return {
        "nproc": str(os.cpu_count()),
        "cpu": cpu_model(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "os": f"{platform.system()} {platform.release()}",
        **versions(),
        "wrk": wrk_version(),
        "load average at start": load_average(),
    }


def load_average() -> str:
    """1/5/15-minute load: anything well above 0 means other work shared the machine during the run."""
    with contextlib.suppress(OSError):
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    return "unknown"


# --- servers -------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A server process in its own process group; `stop()` (always called by `serve`) kills it."""

    def __init__(self, argv: list[str], env: dict[str, str], cwd: Path, log: Path, port: int) -> None:
        self.port = port
        self.log = log
        self._log_file = open(log, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            argv, env=env, cwd=cwd, stdout=self._log_file, stderr=subprocess.STDOUT, start_new_session=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self, path: str = "/healthz", timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}; see {self.log}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + path, timeout=1.0).status_code < 500:
                    return
            time.sleep(0.1)
        raise RuntimeError(f"server not ready after {timeout}s; see {self.log}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self._log_file.close()


@contextlib.contextmanager
def serve(argv: list[str], *, env: dict[str, str] | None = None, cwd: Path = ROOT, log: Path, ready_path="/healthz"):
    """Start a server on a free 127.0.0.1 port ({port} in argv is filled in); killed on the way out."""
    port = free_port()
    server = Server([a.replace("{port}", str(port)) for a in argv], {**os.environ, **(env or {})}, cwd, log, port)
    try:
        server.wait_ready(ready_path)
        yield server
    finally:
        server.stop()


# --- wrk -----------------------------------------------------------------------------------------


def ensure_wrk() -> str:
    path = shutil.which("wrk")
    if path:
        return path
    print("wrk is missing: installing it from Debian's packages", flush=True)
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    install = sudo + ["apt-get", "install", "-y", "-q", "wrk"]
    if subprocess.run(install, stdout=subprocess.DEVNULL, timeout=300).returncode != 0:
        subprocess.run(sudo + ["apt-get", "update", "-q"], stdout=subprocess.DEVNULL, timeout=300, check=True)
        subprocess.run(install, stdout=subprocess.DEVNULL, timeout=300, check=True)
    path = shutil.which("wrk")
    if not path:
        raise RuntimeError("could not install wrk")
    return path


@dataclass
class WrkResult:
    requests_per_second: float
    requests: int
    errors: int
    non_2xx: int
    latency_p50_ms: float | None
    latency_p99_ms: float | None


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()
    return float(number) * _UNITS[unit]


WRK_THREADS = 1
"One wrk thread: on a 2-core machine the server (one worker) gets the other core."


def wrk(url: str, *, connections: int, seconds: float, script: Path, env: dict[str, str]) -> WrkResult:
    """POST load from 127.0.0.1 for a fixed duration; wrk stops by itself (and is killed if it does not)."""
    assert url.startswith("http://127.0.0.1:"), url
    argv = [
        ensure_wrk(), f"-t{WRK_THREADS}", f"-c{connections}", f"-d{seconds}s", "--timeout", "5s", "--latency",
        "-s", str(script), url,
    ]
    out = subprocess.run(argv, capture_output=True, text=True, env={**os.environ, **env}, timeout=seconds + 60)
    if out.returncode != 0:
        raise RuntimeError(f"wrk failed: {out.stderr}")
    text = out.stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
    requests = int(re.search(r"(\d+) requests in", text).group(1))
    errors = 0
    if m := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text):
        errors = sum(int(g) for g in m.groups())
    non_2xx = int(m.group(1)) if (m := re.search(r"Non-2xx or 3xx responses: (\d+)", text)) else 0
    p50 = _ms(m.group(1)) if (m := re.search(r"^\s+50%\s+(\S+)", text, re.M)) else None
    p99 = _ms(m.group(1)) if (m := re.search(r"^\s+99%\s+(\S+)", text, re.M)) else None
    return WrkResult(rps, requests, errors, non_2xx, p50, p99)


# --- small statistics and formatting -------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def median(values):
    return statistics.median(values)


def fmt_int(x: float) -> str:
    return f"{x:,.0f}"


def fmt_ms(x: float) -> str:
    return f"{x:.2f} ms" if x < 100 else f"{x:.0f} ms"
