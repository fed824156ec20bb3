"""``fathom serve`` as users run it (uvicorn's access log on): a viewer link's token never
reaches the log; HEAD and byte ranges through the real HTTP server."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.live_server import fathom_serve
from tests.server_scene import write_scene

ROOT = Path(__file__).resolve().parents[1]
SECRET = "viewer-token-1"  # a working token, as a viewer link carries


@pytest.fixture()
def serve(tmp_path):
    write_scene(tmp_path / "scenes")
    srv = fathom_serve(tmp_path / "scenes", tmp_path / "labels.sqlite3", tmp_path / "serve.log")
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
