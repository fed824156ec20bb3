"""A Fathom server as a real process on 127.0.0.1, for the tests that need real HTTP,
signals or the access log."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from tests.server_scene import TOKENS

ROOT = Path(__file__).resolve().parents[1]


class LiveServer:
    """``python <argv(port)>`` from the repository root with ``env`` added to the environment;
    stdout and stderr go to ``log`` (None: inherited)."""

    def __init__(self, argv: Callable[[int], list[str]], env: dict[str, str], log: Path | None = None):
        self.argv, self.env, self.log = argv, env, log
        self.proc: subprocess.Popen | None = None

    def start(self, timeout_s: float = 60) -> str:
        """Start it on a free port and wait until ``/healthz`` answers 200; its base URL."""
        with socket.socket() as sock:  # a free port (closed again: the server binds it itself)
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        out = self.log.open("ab") if self.log is not None else None
        try:
            self.proc = subprocess.Popen([sys.executable, *self.argv(port)], cwd=ROOT, env={**os.environ, **self.env},
                                         stdout=out, stderr=subprocess.STDOUT if out else None)
        finally:
            if out is not None:
                out.close()
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    return url
            except httpx.TransportError:
                time.sleep(0.1)
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited with {self.proc.returncode}: {self.output()}")
        raise RuntimeError(f"the server did not start in {timeout_s} s: {self.output()}")

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log is not None and self.log.exists() else ""

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> str:
        """SIGTERM (SIGKILL after 10 s); the server's whole output."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.output()


def fathom_serve(scenes: Path, db: Path, log: Path) -> LiveServer:
    """``fathom serve SCENES --port P`` as users run it (uvicorn's access log on, into ``log``),
    with the label database ``db`` and the test tokens."""
    env = {"FATHOM_LABEL_DB": str(db), "FATHOM_TOKENS": json.dumps(TOKENS), "FATHOM_WARMUP": "false"}
    return LiveServer(lambda port: ["-m", "server.cli", "serve", str(scenes), "--port", str(port)], env, log)
