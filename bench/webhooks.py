"""Webhooks accepted per second, and answer times, from a load generator on loopback.

`lsq-sync listen` ([listen] pull = false: only taking hints) runs in its own process on a
new SQLite file (or --db); this process posts JSON webhooks, each naming one of --leads
leads, with --concurrency requests in flight, for --seconds. Every answer must be 200
{"ok": true}: each is a hint committed before its answer.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

from lsq_sync.config import to_toml

from common import workdir

SECRET = "bench-secret-0123456789abcdef"


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def load(host: str, port: int, path: str, leads: int, seconds: float,
               concurrency: int) -> tuple[list[float], int, float]:
    """Post for `seconds` over kept-alive connections (raw HTTP/1.1: a generator that
    costs little CPU, so that the listener is what is measured); returns each answer's
    time (s), the failures, and the span."""
    times: list[float] = []
    failures = 0
    stop_at = time.monotonic() + seconds

    async def worker(n: int) -> None:
        nonlocal failures
        reader, writer = await asyncio.open_connection(host, port)
        i = n
        try:
            while time.monotonic() < stop_at:
                body = (f'{{"RelatedEntityId": "{i % leads:08x}-5151-4000-8000-'
                        f'000000000001", "EventType": "17"}}').encode()
                request = (f"POST {path} HTTP/1.1\r\nHost: {host}\r\n"
                           f"x-lsq-sync-secret: {SECRET}\r\nContent-Type: application/json"
                           f"\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body
                started = time.perf_counter()
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length:", 1)[1].split(b"\r\n")[0])
                answer = await reader.readexactly(length)
                times.append(time.perf_counter() - started)
                if not head.startswith(b"HTTP/1.1 200") or b'"ok":true' not in answer:
                    failures += 1
                i += concurrency
        finally:
            writer.close()

    started = time.monotonic()
    await asyncio.gather(*(worker(n) for n in range(concurrency)))
    return times, failures, time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--db", default="", help="database URL (default: a new SQLite file)")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--leads", type=int, default=1000, help="distinct leads hinted")
    args = parser.parse_args()
    if args.seconds <= 0 or args.concurrency < 1 or args.leads < 1:
        parser.error("--seconds must be above 0, --concurrency and --leads 1 or more")

    folder = workdir()
    db_url = args.db or f"sqlite:///{folder / 'bench.db'}"
    port = free_port()
    config = Path(folder / "c.toml")
    config.write_text(to_toml({"database": {"url": db_url},
                               "listen": {"port": port, "secret": SECRET, "pull": False},
                               "log": {"format": "json", "level": "warning"}}))
    env = {**os.environ, "LSQ_SYNC_CONFIG": str(config)}
    subprocess.run([sys.executable, "-m", "lsq_sync", "db", "upgrade"], env=env, check=True,
                   stdout=subprocess.DEVNULL)
    proc = subprocess.Popen([sys.executable, "-m", "lsq_sync", "listen"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}/lsq/webhook"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                httpx.head(url, timeout=1)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise SystemExit("listen did not start") from None
                time.sleep(0.1)
        times, failures, span = asyncio.run(load("127.0.0.1", port, "/lsq/webhook",
                                                 args.leads, args.seconds,
                                                 args.concurrency))
    finally:
        proc.send_signal(signal.SIGTERM)
        _pid, _status, usage = os.wait4(proc.pid, 0)
    listener_cpu = usage.ru_utime + usage.ru_stime
    times.sort()
    count = len(times)
    q = statistics.quantiles(times, n=100) if count > 1 else [times[0]] * 99
    dialect = db_url.split(":", 1)[0]
    print(f"{dialect}: {count} webhooks in {span:.1f} s = {count / span:.0f}/s accepted, "
          f"concurrency {args.concurrency}, failures {failures}, answer p50 "
          f"{q[49] * 1000:.1f} ms, p99 {q[98] * 1000:.1f} ms, max {times[-1] * 1000:.1f} ms; "
          f"listener CPU {listener_cpu:.1f} s ({listener_cpu / max(count, 1) * 1000:.2f} ms "
          f"per webhook, start-up included)")


if __name__ == "__main__":
    main()
