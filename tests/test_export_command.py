"""``fathom export nuscenes SCENE_DIR --out DATAROOT``: the scene's current labels on disk."""

from __future__ import annotations

import json

import pytest

from formats.raw_log import read_log
from server.cli import main
from server.label_store import LabelStore
from server.prepare import PrepareOptions, prepare
from server.simulate import write_drive_log


@pytest.fixture(scope="module")
def scene(drive, tmp_path_factory):
    log = write_drive_log(tmp_path_factory.mktemp("log"), drive, cameras=False)
    doc = json.loads((log / "log.json").read_text())
    (log / "log.json").write_text(json.dumps(dict(doc, frames=doc["frames"][:2])))
    out = tmp_path_factory.mktemp("scenes") / "road"
    prepare(log, out, options=PrepareOptions(colorize=False))
    times = [f.timestamp_ns for f in read_log(log).frames]
    # the tracks that exist at a frame time (nuScenes annotates samples only)
    return out, [t for t in read_log(log).labels()
                 if any(t.timestamps_ns[0] <= x <= t.timestamps_ns[-1] for x in times)]


def _annotated_instances(dataroot) -> set[str]:
    from nuscenes import NuScenes

    nus = NuScenes(version="v1.0-fathom", dataroot=str(dataroot), verbose=False)
    return {nus.get("instance", a["instance_token"])["token"] for a in nus.sample_annotation}


def test_a_never_served_scene_exports_its_imported_labels(scene, tmp_path, capsys):
    scene_dir, tracks = scene
    assert main(["export", "nuscenes", str(scene_dir), "--out", str(tmp_path / "dr")]) == 0
    assert "label revision 0" in capsys.readouterr().out
    assert (tmp_path / "dr" / "v1.0-fathom" / "sample.json").is_file()
    assert any((tmp_path / "dr" / "samples").rglob("*.pcd.bin"))
    assert len(_annotated_instances(tmp_path / "dr")) == len(tracks) > 0


def test_the_label_store_revision_is_what_is_exported(scene, tmp_path, capsys):
    scene_dir, tracks = scene
    db = tmp_path / "labels.sqlite3"
    store = LabelStore(db)
    first = next(t for t in json.loads((scene_dir / "labels.imported.json").read_text())["tracks"]
                 if t["id"] == tracks[0].track_id)
    store.write("road", 0, lambda d: {"tracks": [first]}, op="put", author="ann", record={})
    store.close()
    assert main(["export", "nuscenes", str(scene_dir), "--label-db", str(db), "--tables-only",
                 "--out", str(tmp_path / "dr")]) == 0
    assert "label revision 1, 1 tracks" in capsys.readouterr().out
    assert not (tmp_path / "dr" / "samples").exists()
    assert len(_annotated_instances(tmp_path / "dr")) == 1


def test_unmapped_categories_are_a_one_line_error(scene, tmp_path, capsys):
    scene_dir, _ = scene
    db = tmp_path / "labels.sqlite3"
    store = LabelStore(db)
    imported = json.loads((scene_dir / "labels.imported.json").read_text())
    odd = [dict(imported["tracks"][0], category="hovercraft")]
    store.write("road", 0, lambda d: {"tracks": odd}, op="put", author="ann", record={})
    store.close()
    args = ["export", "nuscenes", str(scene_dir), "--label-db", str(db), "--out", str(tmp_path / "dr")]
    assert main(args) == 2
    assert "hovercraft" in capsys.readouterr().err
    assert main(args + ["--unmapped", "drop"]) == 0
