"""A labelled log's tracks become its scene's first label revision (operation ``import``), and
a scene is served under its directory's name."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from formats.errors import FormatError
from formats.import_kitti import import_kitti_tracking
from formats.import_pandaset import import_pandaset
from formats.import_sfs import decode_sfs
from formats.raw_log import labels_document, read_log
from formats.scene_store import IMPORTED_LABELS, Scene
from server.config import Settings
from server.label_store import LabelStore
from server.main import create_app
from server.prepare import prepare
from server.schemas import LabelDocument
from server.simulate import write_drive_log
from tests.server_scene import TOKENS
from tests.test_interop_kitti import write_kitti_tracking_fixture
from tests.test_interop_pandaset import write_pandaset_fixture

V = {"Authorization": "Bearer viewer-token-1"}
A = {"Authorization": "Bearer annotator-token-1"}
ADMIN = {"Authorization": "Bearer admin-token-1"}


@pytest.fixture(scope="module")
def short_log(drive, tmp_path_factory) -> Path:
    """Three frames of the test drive with its true tracks as ``labels.json``, no cameras."""
    log = write_drive_log(tmp_path_factory.mktemp("log"), drive, cameras=False)
    doc = json.loads((log / "log.json").read_text())
    (log / "log.json").write_text(json.dumps(dict(doc, frames=doc["frames"][:3])))
    return log


def _client(scenes: Path, **settings) -> TestClient:
    return TestClient(create_app(Settings(scenes_dir=scenes, tokens=json.dumps(TOKENS), warmup=False, **settings)),
                      raise_server_exceptions=False)


def _expected(log: Path) -> list[dict]:
    """The log's tracks as the server stores them (validated and normalised like a PUT)."""
    doc = labels_document(read_log(log).labels())
    return LabelDocument.model_validate(doc).model_dump(mode="json")["tracks"]


def _sfs_annotation_ids(client: TestClient, scene_id: str) -> list[str]:
    r = client.get(f"/v1/scenes/{scene_id}/export/sfs?points=false", headers=V)
    assert r.status_code == 200
    return sorted(a["id"] for a in decode_sfs(r.content)["annotations"])


def test_a_prepared_labelled_log_starts_its_label_history_with_its_tracks(short_log, tmp_path):
    scenes = tmp_path / "scenes"
    assert prepare(short_log, scenes / "drive-a").prepared == 3
    scene = Scene.open(scenes / "drive-a")
    assert scene.scene_id == "drive-a" != read_log(short_log).log_id  # named after its directory
    assert scene.read_imported_labels() == labels_document(read_log(short_log).labels())
    with _client(scenes) as client:
        labels = client.get("/v1/scenes/drive-a/labels", headers=V).json()
        assert labels["revision"] == 1 and labels["tracks"] == _expected(short_log) != []
        history = client.get("/v1/scenes/drive-a/labels/history", headers=ADMIN)
        assert history.status_code == 200
        [entry] = history.json()
        assert (entry["revision"], entry["op"], entry["author"]) == (1, "import", "fathom")
        assert entry["note"] == {"imported_tracks": len(labels["tracks"])}
        assert entry["tracks"] == sorted(t["id"] for t in labels["tracks"])
        assert _sfs_annotation_ids(client, "drive-a") == sorted(t["id"] for t in labels["tracks"])
        # an annotator deletes all but one track
        keep = {"tracks": labels["tracks"][:1]}
        r = client.put("/v1/scenes/drive-a/labels", headers={**A, "If-Match": '"r1"'}, json=keep)
        assert r.status_code == 200 and r.json()["revision"] == 2
    # preparing again (a frame redone) and serving again never brings the deleted tracks back
    (scenes / "drive-a" / "frames" / "000001.json").unlink()
    assert prepare(short_log, scenes / "drive-a").prepared == 1
    with _client(scenes) as client:
        labels = client.get("/v1/scenes/drive-a/labels", headers=V).json()
        assert labels["revision"] == 2 and labels["tracks"] == keep["tracks"]
        assert client.post("/v1/admin/rescan", headers=ADMIN).status_code == 200
        assert client.get("/v1/scenes/drive-a/labels", headers=V).json()["revision"] == 2


def test_an_emptied_document_stays_empty(short_log, tmp_path):
    scenes = tmp_path / "scenes"
    prepare(short_log, scenes / "s")
    with _client(scenes) as client:
        r = client.put("/v1/scenes/s/labels", headers={**A, "If-Match": '"r1"'}, json={"tracks": []})
        assert r.status_code == 200
    with _client(scenes) as client:
        assert client.get("/v1/scenes/s/labels", headers=V).json() == {"scene_id": "s", "revision": 2, "tracks": [],
                                                                        "track_revisions": {}}


def test_a_scene_prepared_while_serving_is_seeded_by_the_rescan(short_log, tmp_path):
    scenes = tmp_path / "scenes"
    scenes.mkdir()
    with _client(scenes) as client:
        assert client.get("/v1/scenes/later/labels", headers=V).status_code == 404
        prepare(short_log, scenes / "later")
        assert client.post("/v1/admin/rescan", headers=ADMIN).json()["scenes"] == 1
        assert client.get("/v1/scenes/later/labels", headers=V).json()["tracks"] == _expected(short_log)


def test_an_unlabelled_log_has_no_imported_labels(short_log, tmp_path):
    log = tmp_path / "log"
    shutil.copytree(short_log, log)
    doc = json.loads((log / "log.json").read_text())
    doc.pop("labels")
    (log / "log.json").write_text(json.dumps(doc))
    prepare(log, tmp_path / "scenes" / "bare")
    assert Scene.open(tmp_path / "scenes" / "bare").imported_labels is None
    assert not (tmp_path / "scenes" / "bare" / IMPORTED_LABELS).exists()
    with _client(tmp_path / "scenes") as client:
        assert client.get("/v1/scenes/bare/labels", headers=V).json()["revision"] == 0


def test_damaged_imported_labels_leave_the_scene_served_without_them(short_log, tmp_path, caplog):
    scenes = tmp_path / "scenes"
    prepare(short_log, scenes / "s")
    path = scenes / "s" / IMPORTED_LABELS
    raw = bytearray(path.read_bytes())
    raw[10] ^= 0x20
    path.write_bytes(bytes(raw))
    with pytest.raises(FormatError, match="digest"):
        Scene.open(scenes / "s").read_imported_labels()
    with _client(scenes) as client:
        assert client.get("/v1/scenes/s", headers=V).status_code == 200
        assert client.get("/v1/scenes/s/labels", headers=V).json()["revision"] == 0
        assert client.app.state.fathom.server_errors == 0
    assert "imported labels not seeded" in caplog.text
    assert LabelStore(scenes / "labels.sqlite3").get("s")[0] == 0


def test_a_scene_directory_name_that_cannot_be_an_id_is_refused(short_log, tmp_path):
    for bad in ("with space", "-dash-first", "x" * 65, "é"):
        with pytest.raises(ValueError, match="served under its directory's name"):
            prepare(short_log, tmp_path / bad)
        assert not (tmp_path / bad).exists()


def test_a_renamed_scene_directory_is_served_under_its_new_name(short_log, tmp_path):
    scenes = tmp_path / "scenes"
    prepare(short_log, scenes / "before")
    (scenes / "before").rename(scenes / "after")
    with _client(scenes) as client:
        assert [s["id"] for s in client.get("/v1/scenes", headers=V).json()] == ["after"]
        assert client.get("/v1/scenes/after/frames/0/cuboids", headers=V).status_code == 200
        assert client.get("/v1/scenes/after/labels", headers=V).json()["tracks"] == _expected(short_log)


def test_an_imported_dataset_keeps_its_labels(drive, tmp_path):
    """PandaSet → raw log → prepared scene → the labels endpoint and the SFS export hold its boxes."""
    write_pandaset_fixture(drive, tmp_path / "002")
    log = import_pandaset(tmp_path / "002", tmp_path / "log")
    expected = _expected(log)
    assert len(expected) > 2
    prepare(log, tmp_path / "scenes" / "pandaset-002")
    with _client(tmp_path / "scenes") as client:
        labels = client.get("/v1/scenes/pandaset-002/labels", headers=V).json()
        assert labels["revision"] == 1 and labels["tracks"] == expected
        assert _sfs_annotation_ids(client, "pandaset-002") == sorted(t["id"] for t in expected)


def test_kitti_labels_keep_their_2d_boxes_as_attributes(drive, tmp_path):
    write_kitti_tracking_fixture(drive, tmp_path / "kitti", sequence=3, images=False)
    log = import_kitti_tracking(tmp_path / "kitti", 3, tmp_path / "log", images=False)
    prepare(log, tmp_path / "scenes" / "kitti-0003")
    with _client(tmp_path / "scenes") as client:
        tracks = client.get("/v1/scenes/kitti-0003/labels", headers=V).json()["tracks"]
    truth = read_log(log).labels()
    assert len(tracks) == len(truth) > 0
    for t, want in zip(tracks, truth):
        got = [kf["attributes"]["bbox"] for kf in t["keyframes"]]
        assert got == [list(a["bbox"]) for a in want.keyframe_attributes]


@pytest.mark.parametrize("value, ok", [([1.0, 2.5, 3.0, 4.0], True), ([0.0] * 17, False), (["a"], False),
                                       ([[1.0]], False), ([], True)])
def test_attributes_may_be_short_lists_of_numbers(value, ok):
    doc = {"tracks": [{"id": "t", "category": "car", "keyframes": [
        {"timestamp_ns": 1, "center": [0, 0, 0], "size": [1, 1, 1], "rotation": [1, 0, 0, 0],
         "attributes": {"bbox": value}}]}]}
    if ok:
        assert LabelDocument.model_validate(doc).tracks[0].keyframes[0].attributes["bbox"] == value
    else:
        with pytest.raises(ValueError, match="bbox"):
            LabelDocument.model_validate(doc)
