"""A private ``redis-server`` for tests and benchmarks: a free port on 127.0.0.1, its own
directory, the append-only file on. Never the shared 6379."""

from __future__ import annotations

import ctypes
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import redis


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:
    """In the child before exec: on Linux, SIGKILL it when the process that started it dies
    (a test run killed by a timeout leaves no server behind)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: clean-up is left to kill9()
        pass


class LocalRedis:
    """``redis-server`` on a free port with ``--dir directory`` (created), AOF with
    ``appendfsync`` (``always``: every acknowledged write is on disk, ``everysec``: Redis's
    default), no RDB snapshots, and ``extra`` arguments. Started at once; :meth:`kill9` and
    :meth:`start` keep port and directory (a restart reads the AOF back)."""

    def __init__(self, directory: str | Path, *, appendfsync: str = "always", extra: tuple[str, ...] = (),
                 server: str | None = None) -> None:
        self.server = server or shutil.which("redis-server") or "/usr/bin/redis-server"
        self.port = free_port()
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._args = [self.server, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
                      "--appendonly", "yes", "--appendfsync", appendfsync, "--save", "",
                      "--daemonize", "no", "--logfile", str(self.dir / "redis.log"), *extra]
        self.proc: subprocess.Popen | None = None
        self.start()

    def start(self, wait_s: float = 10.0) -> None:
        self.proc = subprocess.Popen(self._args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     preexec_fn=_die_with_parent)
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2)
        deadline = time.monotonic() + wait_s
        try:
            while True:
                try:
                    if client.ping():
                        return
                except redis.exceptions.BusyLoadingError:  # reading its AOF back
                    pass
                except redis.ConnectionError:
                    if self.proc.poll() is not None:
                        raise RuntimeError(f"redis-server exited; see {self.dir / 'redis.log'}") from None
                if time.monotonic() > deadline:
                    self.kill9()
                    raise RuntimeError(f"redis-server did not answer within {wait_s} s")
                time.sleep(0.02)
        finally:
            client.close()

    def kill9(self) -> None:
        """SIGKILL the server (if running) and reap it."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, decode_responses=True)

    def __enter__(self) -> LocalRedis:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill9()
