"""``fathom serve`` as users run it (uvicorn's access log on): a viewer link's token never
reaches the log; HEAD and byte ranges through the real HTTP server."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.server_scene import TOKENS, write_scene

ROOT = Path(__file__).resolve().parents[1]
SECRET = "viewer-token-1"  # a working token, as a viewer link carries


class Serve:
    """``python -m server.cli serve SCENES --port P`` with its output (the access log) in ``log``."""

    def __init__(self, scenes: Path, db: Path, log: Path):
        self.scenes, self.db, self.log = scenes, db, log
        self.proc: subprocess.Popen | None = None

    def start(self) -> str:
        with socket.socket() as sock:  # a free port (closed again: serve binds it itself)
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        env = dict(os.environ, FATHOM_LABEL_DB=str(self.db), FATHOM_TOKENS=json.dumps(TOKENS), FATHOM_WARMUP="false")
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "server.cli", "serve", str(self.scenes), "--port",
                                          str(port)], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    return url
            except httpx.TransportError:
                time.sleep(0.1)
            if self.proc.poll() is not None:
                raise RuntimeError(f"fathom serve exited with {self.proc.returncode}: {self.log.read_text()}")
        raise RuntimeError("fathom serve did not start")

    def stop(self) -> str:
        """Stop the server; its whole output."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.log.read_text(errors="replace")


@pytest.fixture()
def serve(tmp_path):
    write_scene(tmp_path / "scenes")
    srv = Serve(tmp_path / "scenes", tmp_path / "labels.sqlite3", tmp_path / "serve.log")
    yield srv
    srv.stop()


def test_viewer_link_token_stays_out_of_the_access_log(serve):
    url = serve.start()
    assert httpx.get(f"{url}/viewer/demo?token={SECRET}").status_code == 200
    assert httpx.get(f"{url}/viewer/demo?lang=en&token={SECRET}&x=1").status_code == 200
    auth = {"Authorization": f"Bearer {SECRET}"}
    points = f"{url}/v1/scenes/demo/frames/0/points?format=raw"
    full = httpx.get(points, headers={**auth, "Accept-Encoding": "identity"})
    head = httpx.head(points, headers={**auth, "Accept-Encoding": "identity"})
    assert head.status_code == 200 and head.content == b""
    assert int(head.headers["content-length"]) == len(full.content) and head.headers["etag"] == full.headers["etag"]
    part = httpx.get(points, headers={**auth, "Range": "bytes=-12"})
    assert part.status_code == 206 and part.content == full.content[-12:]
    log = serve.stop()
    assert '"GET /viewer/demo?token=*** HTTP/1.1" 200' in log, log  # the access log is on, and redacted
    assert '"GET /viewer/demo?lang=en&token=***&x=1 HTTP/1.1" 200' in log, log
    assert '"HEAD /v1/scenes/demo/frames/0/points?format=raw HTTP/1.1" 200' in log, log
    assert SECRET not in log
