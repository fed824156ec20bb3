"""Camera streams as video: random access and sequential decoding of a 1080p H.264 stream.

The stream: 90 frames of 1920×1080 at 30 fps (moving shapes on gradients), H.264 (x264
``veryfast``, CRF 18, 2 B-frames) in MP4, written once per run, in two GOP lengths: a keyframe
every 10 frames (a third of a second) and every 30 (one second).

- ``random_access_1080p_gop10`` / ``_gop30``: one frame by index in a fixed random order, RGB
  out: Fathom's :class:`VideoReader` (keyframe index built before timing: seek to the frame's
  keyframe, decode forward skipping non-reference pictures shown before it) vs the plain PyAV
  way (``container.seek(pts, backward=True)`` then decode until the frame's PTS). The summary
  line gives the median per access; goal ≤ 30 ms (for GOP 10: the time to decode up to a GOP
  at 1080p bounds it, so a long GOP on a slow core can miss it).
- ``sequential_decode_1080p``: every frame in order to RGB: :meth:`VideoReader.frames` vs
  PyAV's plain ``for frame in container.decode(video=0): frame.to_ndarray("rgb24")``, frames/s.
"""

from __future__ import annotations

import numpy as np
import pytest

from formats.video import VideoReader, build_index, write_video

N_FRAMES, H, W = 90, 1080, 1920
ACCESSES = 30


@pytest.fixture(scope="module", params=[10, 30], ids=["gop10", "gop30"])
def stream(request, tmp_path_factory):
    yy, xx = np.mgrid[0:H, 0:W]
    base = np.stack([xx * 255 // W, yy * 255 // H, (xx + yy) * 255 // (W + H)], axis=-1).astype(np.uint8)
    frames = []
    for i in range(N_FRAMES):
        f = base.copy()
        f[300:500, 20 * i:20 * i + 300] = (255, 40, 40)
        f[600 + 3 * i:700 + 3 * i, 900:1200] = (30, 200, 30)
        frames.append(f)
    times = np.arange(N_FRAMES, dtype=np.int64) * 33_333_333
    path = write_video(tmp_path_factory.mktemp("video") / "hd.mp4", frames, times, gop=request.param,
                       preset="veryfast")
    order = np.random.default_rng(7).permutation(N_FRAMES)[:ACCESSES]
    return request.param, path, order


def _median_line(median_s: float) -> str:
    return f"{median_s * 1e3:.1f} ms per random access (goal <= 30 ms)"


def test_fathom_random_access(benchmark, stream):
    gop, path, order = stream
    reader = VideoReader(path, index=build_index(path))
    step = iter(np.tile(order, 1000).tolist())
    benchmark.group = f"random_access_1080p_gop{gop}"
    benchmark.extra_info.update(role="fathom", summary=_median_line)
    img = benchmark.pedantic(lambda: reader.frame(next(step)), rounds=ACCESSES, iterations=1, warmup_rounds=1)
    assert img.shape == (H, W, 3)
    reader.close()


def test_pyav_seek_and_decode(benchmark, stream):
    import av

    gop, path, order = stream
    container = av.open(str(path))
    video = container.streams.video[0]
    pts = sorted(p.pts for p in container.demux(video) if p.size)
    step = iter(np.tile(order, 1000).tolist())

    def access() -> np.ndarray:
        target = pts[next(step)]
        container.seek(target, stream=video, backward=True, any_frame=False)
        for frame in container.decode(video):
            if frame.pts == target:
                return frame.to_ndarray(format="rgb24")
        raise AssertionError("frame not found")

    benchmark.group = f"random_access_1080p_gop{gop}"
    benchmark.extra_info.update(role="peer")
    img = benchmark.pedantic(access, rounds=ACCESSES, iterations=1, warmup_rounds=1)
    assert img.shape == (H, W, 3)
    container.close()


def test_fathom_sequential(benchmark, stream):
    gop, path, _ = stream
    if gop != 10:
        pytest.skip("one GOP length is enough for sequential decoding")
    index = build_index(path)
    benchmark.group = "sequential_decode_1080p"
    benchmark.extra_info.update(role="fathom", items=N_FRAMES, unit="frames")

    def run() -> int:
        with VideoReader(path, index=index) as reader:
            return sum(1 for _ in reader.frames())

    assert benchmark.pedantic(run, rounds=3, iterations=1) == N_FRAMES


def test_pyav_plain_decode(benchmark, stream):
    import av

    gop, path, _ = stream
    if gop != 10:
        pytest.skip("one GOP length is enough for sequential decoding")
    benchmark.group = "sequential_decode_1080p"
    benchmark.extra_info.update(role="peer")

    def run() -> int:
        with av.open(str(path)) as container:
            return sum(1 for frame in container.decode(video=0) if frame.to_ndarray(format="rgb24").size)

    assert benchmark.pedantic(run, rounds=3, iterations=1) == N_FRAMES
