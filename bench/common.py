"""Helpers for the benchmarks: a simulator in its own process, configs, rusage."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from lsq_sync.config import to_toml
from lsq_sync.testing import DEMO_ACCESS_KEY, DEMO_SECRET_KEY


class SimProcess:
    """`lsq-sync simulate` on a free port, in a separate process (its CPU is not ours)."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "lsq_sync", "simulate", "--port", "0", *args],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"})
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if " on http://" in line:
                self.url = line.split(" on ")[1].split(": ")[0].strip()
                break
        else:
            raise RuntimeError("the simulator did not start")

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.url}/_sim/stats", timeout=10) as answer:
            return json.loads(answer.read())

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def workdir() -> Path:
    return Path(tempfile.mkdtemp(prefix="lsq-bench-"))


def write_config(path: Path, sim_url: str, db_url: str, **lsq: Any) -> Path:
    settings = {"base_url": sim_url, "access_key": DEMO_ACCESS_KEY,
                "secret_key": DEMO_SECRET_KEY, **lsq}
    path.write_text(to_toml({"lsq": settings, "database": {"url": db_url},
                             "log": {"format": "json", "level": "warning"}}))
    return path


def run_cli(*args: str, timeout: float | None = None) -> tuple[int, float, float, float]:
    """Run lsq-sync; returns (exit code, wall seconds, CPU seconds, peak RSS MB)."""
    return run_cmd([sys.executable, "-m", "lsq_sync", *args], timeout=timeout)


def run_cmd(argv: list[str], timeout: float | None = None) -> tuple[int, float, float, float]:
    """Run a command; returns (exit code, wall seconds, CPU seconds, peak RSS MB)."""
    start = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = None if timeout is None else start + timeout
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if deadline is not None and time.monotonic() > deadline:
            proc.terminate()
            pid, status, usage = os.wait4(proc.pid, 0)
            break
        time.sleep(0.005)
    wall = time.monotonic() - start
    cpu = usage.ru_utime + usage.ru_stime
    return os.waitstatus_to_exitcode(status), wall, cpu, usage.ru_maxrss / 1024


def lsq(config: Path, *args: str) -> list[str]:
    return ["--config", str(config), *args]
