"""Frame serving on loopback, 16 concurrent clients: Fathom's server vs static file servers
returning the same bytes (goal for cache hits: ≥ 70 % of the static throughput, i.e. ratio
peer/fathom ≥ 0.7).

All servers are real processes on 127.0.0.1 serving the same 8 frames (Arrow streams,
~3.6 MB each): Fathom (uvicorn + FastAPI, from its scene store) twice, and two peers over
files holding exactly the bytes Fathom serves, both reported: Starlette ``StaticFiles``
under uvicorn, and Python's ``http.server`` (``ThreadingHTTPServer``, HTTP/1.1 keep-alive).
The timed unit is the same batch for all: 16 client threads each fetching ``PER_CLIENT``
frames (keep-alive connections, no compression); every response's length is checked.

- ``cache_hits``: Fathom with its payload cache (256 MB), warmed before timing (the fixture
  fetches every frame once), so every timed fetch is a cache hit.
- ``cold_cache``: Fathom with ``cache_bytes=0``: every fetch is a first fetch, the Arrow
  stream built from the memory-mapped store per request (the files themselves are in the
  OS page cache, as the static servers' are). Reported without a goal.

Frames/s, MB/s and p50/p99 latency go to ``extra_info`` and are printed (run with ``-s``).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest

from engine.quaternion import from_yaw
from engine.se3 import SE3
from formats.scene_store import SceneWriter, points_table

ROOT = Path(__file__).resolve().parents[1]
N_FRAMES = 8
N_POINTS = 120_000  # ~3.6 MB per served frame (x y z intensity rgb time_offset_ns sensor_id ring)
CLIENTS = 16
PER_CLIENT = 4
TOKEN = "bench-viewer-token"
HEADERS = {"Authorization": f"Bearer {TOKEN}", "Accept-Encoding": "identity"}

STATIC_APP = """
import os
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles
app = Starlette(routes=[Mount("/", StaticFiles(directory=os.environ["BENCH_STATIC_DIR"]))])
"""
# Python's threading file server, HTTP/1.1 keep-alive (a second, non-ASGI peer)
HTTP_SERVER = """
import functools, http.server, socket, sys
class Handler(http.server.SimpleHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *args):
        pass
sock = socket.socket(fileno=int(sys.argv[1]))
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=sys.argv[2]),
                                         bind_and_activate=False)
server.socket.close()
server.socket = sock
server.socket.listen(64)
server.serve_forever()
"""


def _start(args: list[str], env: dict[str, str], uvicorn: bool = True) -> tuple[subprocess.Popen, str]:
    sock = socket.socket()
    # accepted connections inherit TCP_NODELAY (uvicorn --fd takes the socket for a Unix one and
    # leaves Nagle's algorithm on: ~40 ms on every small response)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    cmd = ([sys.executable, "-m", "uvicorn", *args, "--fd", str(sock.fileno()), "--log-level", "warning",
            "--no-access-log"] if uvicorn else [sys.executable, args[0], str(sock.fileno()), *args[1:]])
    proc = subprocess.Popen(cmd, cwd=ROOT, env=dict(os.environ, **env), pass_fds=(sock.fileno(),))
    sock.close()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            httpx.get(url + "/", timeout=1)
            return proc, url
        except httpx.TransportError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"server {args} did not start")


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("serving")
    writer = SceneWriter(tmp / "scenes" / "bench", scene_id="bench")
    rng = np.random.default_rng(0)
    for i in range(N_FRAMES):
        xyz = rng.uniform(-80, 80, (N_POINTS, 3))
        writer.write_frame(i, 1_000_000_000 * i, SE3(from_yaw(0.1 * i), np.array([i, 0.0, 0.0])), points_table(
            xyz, intensity=rng.random(N_POINTS, np.float32), rgb=rng.integers(0, 256, (N_POINTS, 3), dtype=np.uint8),
            time_offset_ns=rng.integers(0, 100_000_000, N_POINTS), sensor_id=np.zeros(N_POINTS, np.uint8),
            ring=rng.integers(0, 128, N_POINTS).astype(np.uint16)))
    writer.finalize()
    env = {"FATHOM_SCENES_DIR": str(tmp / "scenes"), "FATHOM_LABEL_DB": str(tmp / "labels.sqlite3"),
           "FATHOM_TOKENS": json.dumps({TOKEN: "viewer"})}
    fathom, fathom_url = _start(["--factory", "server.main:app_from_env"], env)
    cold, cold_url = _start(["--factory", "server.main:app_from_env"],
                            {**env, "FATHOM_CACHE_BYTES": "0", "FATHOM_LABEL_DB": str(tmp / "labels-cold.sqlite3")})
    static_dir = tmp / "static"
    static_dir.mkdir()
    for i in range(N_FRAMES):  # exactly the bytes Fathom serves
        body = httpx.get(f"{fathom_url}/v1/scenes/bench/frames/{i}/points", headers=HEADERS, timeout=60).content
        (static_dir / f"{i}.arrows").write_bytes(body)
        assert httpx.get(f"{cold_url}/v1/scenes/bench/frames/{i}/points", headers=HEADERS, timeout=60).content == body
    (tmp / "static_app.py").write_text(STATIC_APP)
    static, static_url = _start(["--app-dir", str(tmp), "static_app:app"], {"BENCH_STATIC_DIR": str(static_dir)})
    (tmp / "http_server.py").write_text(HTTP_SERVER)
    plain, plain_url = _start([str(tmp / "http_server.py"), str(static_dir)], {}, uvicorn=False)
    urls = {
        "cache_hits": [f"{fathom_url}/v1/scenes/bench/frames/{i}/points" for i in range(N_FRAMES)],
        "cold_cache": [f"{cold_url}/v1/scenes/bench/frames/{i}/points" for i in range(N_FRAMES)],
        "static": [f"{static_url}/{i}.arrows" for i in range(N_FRAMES)],
        "http.server": [f"{plain_url}/{i}.arrows" for i in range(N_FRAMES)],
    }
    sizes = [(static_dir / f"{i}.arrows").stat().st_size for i in range(N_FRAMES)]
    yield urls, sizes
    for proc in (fathom, cold, static, plain):
        proc.terminate()
        proc.wait(10)


def _run(benchmark, urls: list[str], sizes: list[int], role: str) -> None:
    clients = [httpx.Client(headers=HEADERS, timeout=60) for _ in range(CLIENTS)]
    latencies: list[float] = []
    pool = ThreadPoolExecutor(CLIENTS)

    def one_client(k: int) -> list[float]:
        out = []
        for j in range(PER_CLIENT):
            i = (k + j * CLIENTS) % len(urls)
            t0 = time.perf_counter()
            r = clients[k].get(urls[i])
            out.append(time.perf_counter() - t0)
            assert r.status_code == 200 and len(r.content) == sizes[i]
        return out

    def batch() -> None:
        for lat in pool.map(one_client, range(CLIENTS)):
            latencies.extend(lat)

    benchmark.pedantic(batch, rounds=5, warmup_rounds=1, iterations=1)
    pool.shutdown()
    for c in clients:
        c.close()
    if benchmark.stats is None:  # --benchmark-disable: one untimed round, nothing to report
        return
    median = benchmark.stats.stats.median
    n = CLIENTS * PER_CLIENT
    total = sum(sizes[(k + j * CLIENTS) % len(urls)] for k in range(CLIENTS) for j in range(PER_CLIENT))
    lat = np.array(latencies[n:])  # without the warm-up round
    info = {"frames_per_s": n / median, "MB_per_s": total / median / 1e6,
            "p50_ms": float(np.percentile(lat, 50) * 1e3), "p99_ms": float(np.percentile(lat, 99) * 1e3)}
    benchmark.extra_info.update(info)
    print(f"\n{role}: " + ", ".join(f"{k} {v:.1f}" for k, v in info.items()))


@pytest.mark.parametrize("cache", ["cache_hits", "cold_cache"])
def test_fathom_frame_serving(benchmark, servers, cache):
    urls, sizes = servers
    benchmark.group = "serving_16_clients"
    benchmark.extra_info.update(role="fathom", **({"goal": 0.7} if cache == "cache_hits" else {}))
    _run(benchmark, urls[cache], sizes, f"fathom ({cache})")


def test_static_file_serving(benchmark, servers):
    urls, sizes = servers
    benchmark.group = "serving_16_clients"
    benchmark.extra_info.update(role="peer")
    _run(benchmark, urls["static"], sizes, "static (uvicorn + Starlette StaticFiles)")


def test_http_server_file_serving(benchmark, servers):
    urls, sizes = servers
    benchmark.group = "serving_16_clients"
    benchmark.extra_info.update(role="peer")
    _run(benchmark, urls["http.server"], sizes, "static (http.server ThreadingHTTPServer)")
