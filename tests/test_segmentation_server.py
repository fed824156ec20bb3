"""Segmentation through the server on the synthetic drive: map labels transferred to every
frame against the simulator's truth, cuboid fill against prepare's ``box_id``, the camera
lasso against the engine, revisions, history, bad input; the store survives ``kill -9``."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from engine.segmentation import select_lasso, select_prism
from formats.scene_store import Scene, column_values
from server.config import Settings
from server.main import create_app
from server.segmentation_edits import frame_points
from server.segmentation_store import Change, SegmentationStore, StaleRevision
from tests.segmentation_scene import ADMIN, ANNOTATOR, TOKENS, category_classes, labelled_scene, true_objects

URL = "/v1/scenes/road-0/segmentation"


@pytest.fixture(scope="module")
def env(drive, tmp_path_factory):
    root = tmp_path_factory.mktemp("seg")
    scene_dir = labelled_scene(drive, root)
    app = create_app(Settings(scenes_dir=scene_dir.parent, tokens=json.dumps(TOKENS), warmup=False))
    with TestClient(app, raise_server_exceptions=False) as client:
        r = client.put(f"{URL}/classes", headers={**ANNOTATOR, "If-Match": '"r0"'},
                       json={"classes": category_classes(drive), "voxel_m": 0.05})
        assert r.status_code == 200, r.text
        yield client, Scene.open(scene_dir)
    assert app.state.fathom.server_errors == 0


def labels(client: TestClient, frame: int, revision: int | None = None, lod: int = 0) -> tuple[np.ndarray, np.ndarray]:
    params = {"lod": lod} if revision is None else {"revision": revision, "lod": lod}
    r = client.get(f"{URL}/frames/{frame}", headers=ADMIN, params=params)
    assert r.status_code == 200, r.text
    n = int(r.headers["x-points"])
    return np.frombuffer(r.content, "<u2", n), np.frombuffer(r.content, "<u4", n, 2 * n)


def edit(client: TestClient, edits: list[dict], if_match: str = "*"):
    return client.post(f"{URL}/edits", headers={**ANNOTATOR, "If-Match": if_match}, json={"edits": edits})


def class_of(drive) -> dict[str, int]:
    return {c["name"]: c["id"] for c in category_classes(drive)}


def map_edits(drive) -> list[dict]:
    """The static world labelled once on the map: each static box (2 cm wider on each side,
    reaching 10 cm below the ground) with its category, then everything unlabelled up to 0.3 m
    as ground."""
    ids = class_of(drive)
    out = []
    for t in drive.static_tracks:
        (cx, cy, cz), (l, w, h) = t.centers[0], t.sizes[0]
        top, bottom = cz + h / 2 + 0.02, cz - h / 2 - 0.1
        out.append({"frame": None, "class_id": ids[t.category], "selection": {
            "kind": "box", "center": [cx, cy, (top + bottom) / 2], "size": [l + 0.04, w + 0.04, top - bottom],
            "rotation": t.rotations[0].tolist()}})
    out.append({"frame": None, "class_id": ids["ground"], "only_unlabelled": True, "selection": {
        "kind": "prism", "polygon": [[-1e4, -1e4], [1e4, -1e4], [1e4, 1e4], [-1e4, 1e4]], "z_min": -1.0,
        "z_max": 0.3}})
    return out


def test_map_labels_reach_every_frame_with_the_true_class(drive, env):
    client, scene = env
    r = edit(client, map_edits(drive))
    assert r.status_code == 200, r.text
    written = r.json()["written"]
    assert all(w["frame"] is None for w in written) and written[-1]["points"] > 1000  # the ground
    assert sum(w["points"] > 0 for w in written[:-1]) > 5  # the boxes within the LiDARs' reach
    names = class_of(drive)
    truth_class = np.array([names[c] for c in drive.objects.category])
    n_static = drive.world.n_static
    static = agree = moving = moving_agree = 0
    for f in scene.frames:
        cls, inst = labels(client, f.index)
        hit = true_objects(drive, f.index)
        is_static = hit <= n_static
        static += is_static.sum()
        agree += (cls[is_static] == truth_class[hit[is_static]]).sum()
        # points of moving actors take their track's class and instance (the moving boxes)
        act = ~is_static
        moving += act.sum()
        moving_agree += (cls[act] == truth_class[hit[act]]).sum()
    assert static > 20_000 and agree / static >= 0.995, (agree, static)
    assert moving > 500 and moving_agree / moving >= 0.99, (moving_agree, moving)
    info = client.get(URL, headers=ADMIN).json()
    assert info["map_voxels"] and info["frames"] == [] and info["voxel_m"] == 0.05
    assert set(info["instances"]) == {t.track_id for t in (*drive.static_tracks, *drive.actor_tracks)}


def test_cuboid_fill_matches_box_id(drive, env):
    """The fill finds boxes as prepare found ``box_id`` (same tracks, margin, firing-time steps)
    but from the stored positions, quantised to 1 mm after prepare's test: a point within half a
    millimetre of a box face may fall the other way, nothing else differs."""
    client, scene = env
    names = class_of(drive)
    instances = client.get(URL, headers=ADMIN).json()["instances"]
    before = {f.index: labels(client, f.index) for f in scene.frames}
    r = edit(client, [{"frame": f.index, "class_id": None, "selection": {"kind": "cuboids"}} for f in scene.frames])
    assert r.status_code == 200, r.text
    boxed = differ = 0
    for f in scene.frames:
        box_id = column_values(scene.stored_points(f.index), "box_id").astype(np.int64)
        boxes = scene.boxes(f.index)
        cls, inst = labels(client, f.index)
        want_c, want_i = before[f.index][0].copy(), before[f.index][1].copy()
        inside = box_id >= 0
        want_c[inside] = np.array([names[c] for c in boxes.categories])[box_id[inside]]
        want_i[inside] = np.array([instances[t] for t in boxes.track_ids])[box_id[inside]]
        boxed += inside.sum()
        differ += ((cls != want_c) | (inst != want_i)).sum()
    assert boxed > 5000 and differ <= 2e-4 * boxed, (differ, boxed)
    assert client.get(URL, headers=ADMIN).json()["frames"] == [f.index for f in scene.frames]


def test_lasso_labels_the_visible_points_inside_the_polygon(drive, env):
    client, scene = env
    f = scene.frames[4]
    cam = scene.cameras["CAM_FRONT"]
    w, h = cam.intrinsics.width, cam.intrinsics.height
    poly = [[5.0, 5.0], [w - 5.0, 5.0], [w * 0.7, h - 5.0], [w * 0.2, h - 10.0]]
    r = edit(client, [{"frame": f.index, "class_id": 0, "selection": {"kind": "lasso", "camera": "CAM_FRONT",
                                                                         "polygon": poly}}])
    assert r.status_code == 200, r.text
    pts = frame_points(scene, f.index)
    want = select_lasso(pts.xyz, cam, scene.world_from_ego(), f.image_timestamps_ns["CAM_FRONT"], np.array(poly))
    cls, _ = labels(client, f.index)
    assert want.sum() > 200 and r.json()["written"][0]["points"] == want.sum()
    assert not cls[want].any() and cls[~want].any()


def test_history_and_reading_an_older_revision(env):
    client, scene = env
    history = client.get(f"{URL}/history", headers=ADMIN).json()
    assert [h["op"] for h in history[:2]] == ["classes", "edit"] and history[1]["layers"] == [-1]
    rev = client.get(URL, headers=ADMIN).json()["revision"]
    old_c, _ = labels(client, 0, revision=2)  # the map alone
    r = edit(client, [{"frame": 0, "class_id": 1, "selection": {"kind": "sphere", "center": [0, 0, 0],
                                                                 "radius": 1e4}}], f'"r{rev}"')
    assert r.status_code == 200 and r.json()["revision"] == rev + 1
    assert (labels(client, 0)[0] == 1).all()
    np.testing.assert_array_equal(labels(client, 0, revision=2)[0], old_c)
    # clearing the frame's own labels hands the points back to the map and the moving boxes
    r = edit(client, [{"frame": 0, "class_id": None, "selection": {"kind": "indices",
                                                                    "indices": list(range(scene.frame(0).n_points))}}])
    assert r.status_code == 200
    np.testing.assert_array_equal(labels(client, 0)[0], old_c)
    assert client.get(URL, headers=ADMIN, params={"revision": 10_000}).status_code == 404


@pytest.mark.parametrize("edit_body, loc", [
    ({"frame": 0, "class_id": 1, "selection": {"kind": "sphere", "center": [0, math.nan, 0], "radius": 1}},
     ["body", "edits", 0, "selection", "sphere", "center", 1]),
    ({"frame": 0, "class_id": 1, "selection": {"kind": "prism", "polygon": [[0, 0], [1, 1]], "z_min": 0,
                                               "z_max": 1}}, ["body", "edits", 0, "selection", "prism", "polygon"]),
    ({"frame": 0, "class_id": 999, "selection": {"kind": "indices", "indices": [0]}}, ["body", "edits", 0, "class_id"]),
    ({"frame": 999, "class_id": 1, "selection": {"kind": "indices", "indices": [0]}}, ["body", "edits", 0, "frame"]),
    ({"frame": 0, "class_id": 1, "selection": {"kind": "indices", "indices": [10**8]}},
     ["body", "edits", 0, "selection", "indices"]),
    ({"frame": 0, "class_id": 1, "selection": {"kind": "lasso", "camera": "NOPE", "polygon": [[0, 0], [1, 0], [0, 1]]}},
     ["body", "edits", 0, "selection", "camera"]),
    ({"frame": None, "class_id": 1, "selection": {"kind": "cuboids"}}, ["body", "edits", 0, "selection", "kind"]),
])
def test_bad_edits_are_422_naming_the_field_and_change_nothing(env, edit_body, loc):
    client, _ = env
    rev = client.get(URL, headers=ADMIN).json()["revision"]
    body = json.dumps({"edits": [{"frame": 1, "class_id": 2, "selection": {"kind": "indices", "indices": [0]}},
                                 edit_body]})  # NaN goes out as the JSON token NaN
    r = client.post(f"{URL}/edits", headers={**ANNOTATOR, "If-Match": "*", "Content-Type": "application/json"},
                    content=body)
    assert r.status_code == 422, r.text
    want = [*loc[:2], 1, *loc[3:]]  # the second edit is the bad one
    assert r.json()["detail"][0]["loc"][:len(want)] == want
    assert client.get(URL, headers=ADMIN).json()["revision"] == rev


def test_stale_revision_is_412_and_if_match_is_required(env):
    client, _ = env
    rev = client.get(URL, headers=ADMIN).json()["revision"]
    one = [{"frame": 2, "class_id": 1, "selection": {"kind": "indices", "indices": [0, 1]}}]
    assert edit(client, one, f'"r{rev}"').status_code == 200
    r = edit(client, one, f'"r{rev}"')
    assert r.status_code == 412 and r.headers["etag"] == f'"r{rev + 1}"'
    assert client.post(f"{URL}/edits", headers=ANNOTATOR, json={"edits": one}).status_code == 428
    assert client.post(f"{URL}/edits", headers={"Authorization": "Bearer viewer-token", "If-Match": "*"},
                       json={"edits": one}).status_code == 403
    r = client.put(f"{URL}/classes", headers={**ANNOTATOR, "If-Match": "*"},
                   json={"classes": [{"id": 0, "name": "unlabelled"}]})
    assert r.status_code == 422 and "dropped" in r.text
    r = client.put(f"{URL}/classes", headers={**ANNOTATOR, "If-Match": "*"},
                   json={"classes": [{"id": 0, "name": "x"}], "voxel_m": 0.2})
    assert r.status_code == 422


def test_select_gives_the_prism_rows_without_writing(env):
    """A prism tried on a frame (world and ego frame, with a level of detail) selects the rows
    the engine's select_prism selects there; an indices edit of those rows labels exactly them."""
    client, scene = env
    f = scene.frames[3]
    viewer = {"Authorization": "Bearer viewer-token"}
    rev = client.get(URL, headers=ADMIN).json()["revision"]
    world = frame_points(scene, f.index).xyz
    ego = f.world_from_ego.inverse().apply(world)
    lod_rows = scene.lod_rows(f.index, 1)
    for frame, xyz in [("world", world), ("ego", ego)]:
        cx, cy = np.median(xyz[:, :2], axis=0)
        poly = [[cx - 8, cy - 5], [cx + 10, cy - 6], [cx + 6, cy + 9], [cx - 7, cy + 4]]
        z = np.median(xyz[:, 2])
        body = {"selection": {"kind": "prism", "polygon": poly, "z_min": z - 0.5, "z_max": z + 1.0}, "frame": frame}
        r = client.post(f"{URL}/frames/{f.index}/select", headers=viewer, json={**body, "lod": 1})
        assert r.status_code == 200, r.text
        want = select_prism(xyz, np.array(poly), z - 0.5, z + 1.0)
        out = r.json()
        assert out["indices"] == np.flatnonzero(want).tolist() and out["count"] == want.sum() > 100
        assert out["lod_indices"] == np.flatnonzero(want[lod_rows]).tolist()
        assert (out["points"], out["lod_points"], out["frame"]) == (len(xyz), len(lod_rows), frame)
    assert client.get(URL, headers=ADMIN).json()["revision"] == rev  # nothing written
    r = edit(client, [{"frame": f.index, "class_id": 1, "selection": {"kind": "indices", "indices": out["indices"]}}])
    assert r.status_code == 200 and r.json()["written"][0]["points"] == out["count"]
    cls, _ = labels(client, f.index)
    assert (cls[want] == 1).all() and (cls[~want] != 1).any()
    np.testing.assert_array_equal(labels(client, f.index, lod=1)[0], cls[lod_rows])


@pytest.mark.parametrize("patch, loc", [
    ({"selection": {"kind": "prism", "polygon": [[0, 0], [1, 1]], "z_min": 0, "z_max": 1}},
     ["body", "selection", "polygon"]),
    ({"selection": {"kind": "prism", "polygon": [[0, 0], [1, 0], [0, 1]], "z_min": math.nan, "z_max": 1}},
     ["body", "selection", "z_min"]),
    ({"selection": {"kind": "prism", "polygon": [[0, 0], [1, 0], [0, 1]], "z_min": 2, "z_max": 1}},
     ["body", "selection"]),
    ({"selection": {"kind": "sphere", "center": [0, 0, 0], "radius": 1}}, ["body", "selection", "kind"]),
    ({"frame": "lidar"}, ["body", "frame"]),
    ({"lod": 9}, ["body", "lod"]),
])
def test_bad_select_is_422_naming_the_field(env, patch, loc):
    client, _ = env
    body = {"selection": {"kind": "prism", "polygon": [[0, 0], [1, 0], [0, 1]], "z_min": 0, "z_max": 1}, **patch}
    r = client.post(f"{URL}/frames/0/select", headers={**ADMIN, "Content-Type": "application/json"},
                    content=json.dumps(body))  # NaN goes out as the JSON token NaN
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["loc"][:len(loc)] == loc
    assert client.get(f"{URL}/frames/0", headers=ADMIN, params={"lod": 9}).status_code == 422


_WRITER = """
import sys
from server.segmentation_store import Change, SegmentationStore, StaleRevision
store = SegmentationStore(sys.argv[1])
while True:
    rev = store.write("s", None, lambda s: Change(None, {s.revision % 7: bytes(300) + str(s.revision).encode()}),
                      op="edit", author="w")
    print(rev, flush=True)
"""


def test_kill_9_loses_no_acknowledged_write(tmp_path):
    db = tmp_path / "seg.sqlite3"
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(db)], stdout=subprocess.PIPE, text=True, cwd=root,
                            env={**os.environ, "PYTHONPATH": str(root)})
    acked = 0
    for line in proc.stdout:
        acked = int(line)
        if acked >= 40:
            break
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    store = SegmentationStore(db)
    assert store.revision("s") >= acked
    assert store.read("s", lambda s: s.layer((acked - 1) % 7), acked) == bytes(300) + str(acked - 1).encode()
    assert len(store.history("s", limit=1000)) == store.revision("s")
    with pytest.raises(StaleRevision):
        store.write("s", acked - 1, lambda s: Change(None, {}), op="x", author="y")
