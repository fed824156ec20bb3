"""Segmentation exports read by their devkits (nuscenes-devkit, scale_sensor_fusion_io, the
SemanticKITTI layout) and imported back exactly; the served zip and the import route."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from fastapi.testclient import TestClient

from formats.export_nuscenes import token
from formats.scene_store import Scene, column_values
from formats.segmentation import classes_from_json
from formats.segmentation_export import (
    EXPORTERS,
    IMPORTERS,
    NUSCENES_VERSION,
    SceneLabels,
    export_nuscenes,
    export_semantickitti,
    export_sfs,
)
from server.config import Settings
from server.main import create_app
from tests.segmentation_scene import ADMIN, ANNOTATOR, TOKENS, category_classes, labelled_scene, true_objects

nuscenes = pytest.importorskip("nuscenes")
sfio = pytest.importorskip("scale_sensor_fusion_io")
from nuscenes.nuscenes import NuScenes  # noqa: E402
from nuscenes.utils.data_classes import LidarPointCloud  # noqa: E402
from nuscenes.utils.data_io import load_bin_file  # noqa: E402
from scale_sensor_fusion_io.loaders.sfs_loader import SFSLoader  # noqa: E402
from scale_sensor_fusion_io.validation import parse_and_validate_scene  # noqa: E402


@pytest.fixture(scope="module")
def scene_dir(drive, tmp_path_factory) -> Path:
    return labelled_scene(drive, tmp_path_factory.mktemp("segx"))


@pytest.fixture(scope="module")
def truth(drive, scene_dir) -> SceneLabels:
    """The simulator's truth as labels: the category's class, the actor's object id as instance."""
    classes = classes_from_json(category_classes(drive))
    ids = {c.name: c.id for c in classes}
    cls_of = np.array([ids[c] for c in drive.objects.category], np.uint16)
    frames = {}
    for f in Scene.open(scene_dir).frames:
        hit = true_objects(drive, f.index)
        frames[f.index] = (cls_of[hit], np.where(hit > drive.world.n_static, hit, 0).astype(np.uint32))
    return SceneLabels(classes, frames)


def write(files: dict[str, bytes], root: Path) -> Path:
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


def assert_same(a: SceneLabels, b: SceneLabels, classes: bool = True) -> None:
    assert sorted(a.frames) == sorted(b.frames)
    for k in a.frames:
        np.testing.assert_array_equal(a.frames[k][0], b.frames[k][0])
        np.testing.assert_array_equal(a.frames[k][1], b.frames[k][1])
        assert a.frames[k][0].dtype == np.uint16 and a.frames[k][1].dtype == np.uint32
    if classes:
        assert a.classes == b.classes


def test_semantickitti_labels_and_yaml(scene_dir, truth, tmp_path):
    scene = Scene.open(scene_dir)
    root = write(export_semantickitti(scene, truth), tmp_path)
    mapping = yaml.safe_load((root / "semantic-kitti.yaml").read_text())
    assert mapping["labels"] == {c.id: c.name for c in truth.classes}
    assert mapping["color_map"][1] == list(reversed(truth.classes[1].color))  # BGR
    for f in scene.frames:
        raw = np.fromfile(root / f"sequences/00/labels/{f.index:06d}.label", dtype=np.uint32)
        np.testing.assert_array_equal(raw & 0xFFFF, truth.frames[f.index][0])  # semantic-kitti-api's split
        np.testing.assert_array_equal(raw >> 16, truth.frames[f.index][1])
    files = {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}
    assert_same(IMPORTERS["semantickitti"](scene, files), truth)
    big = SceneLabels(truth.classes, {k: (c, i + 70_000 * (i > 0)) for k, (c, i) in truth.frames.items()})
    with pytest.raises(ValueError, match="below 65536"):
        export_semantickitti(scene, big)


def test_nuscenes_lidarseg_and_panoptic_load_in_the_devkit(drive, scene_dir, truth, tmp_path):
    scene = Scene.open(scene_dir)
    tracks = [*drive.static_tracks, *drive.actor_tracks]
    root = write(export_nuscenes(scene, truth, tracks), tmp_path)
    colormap = {k: tuple(v) for k, v in json.loads((root / "colormap.json").read_text()).items()}
    nusc = NuScenes(version=NUSCENES_VERSION, dataroot=str(root), verbose=False, colormap=colormap)
    assert len(nusc.lidarseg) == len(nusc.panoptic) == len(scene.frames) * len(scene.lidars)
    for c in truth.classes:
        assert nusc.lidarseg_name2idx_mapping[c.name] == c.id
    for position, f in enumerate(scene.frames):
        sensor = column_values(scene.stored_points(f.index), "sensor_id")
        cls, inst = truth.frames[f.index]
        for k, lidar in enumerate(scene.lidars):
            sd = nusc.get("sample_data", token("sample_data", scene.scene_id, lidar.name, position))
            rec = nusc.get("lidarseg", token("lidarseg", sd["token"]))
            seg = load_bin_file(str(root / rec["filename"]), "lidarseg")
            pan = load_bin_file(str(root / nusc.get("panoptic", token("panoptic", sd["token"]))["filename"]),
                                "panoptic")
            points = LidarPointCloud.from_file(str(root / sd["filename"]))
            assert points.points.shape[1] == len(seg) == len(pan) == (sensor == k).sum()
            np.testing.assert_array_equal(seg, cls[sensor == k])
            np.testing.assert_array_equal(pan // 1000, cls[sensor == k])
            np.testing.assert_array_equal(pan % 1000, inst[sensor == k])
    files = {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}
    assert_same(IMPORTERS["nuscenes"](scene, files), truth)


def test_sfs_labeled_points_validate_and_import_back(scene_dir, truth, tmp_path):
    scene = Scene.open(scene_dir)
    files = export_sfs(scene, truth)
    path = write(files, tmp_path) / f"{scene.scene_id}.sfs"
    result = parse_and_validate_scene(SFSLoader(str(path)).load_unsafe())
    assert result.success, getattr(result, "details", result)
    loaded = SFSLoader(str(path)).load_as_sfs()
    points = [a for a in loaded.annotations if a.type in ("labeled_points", "point_segmentation")]
    assert points and all(a.label in {c.name for c in truth.classes} for a in points)
    back = IMPORTERS["sfs"](scene, files)
    assert_same(back, truth, classes=False)
    assert [(c.id, c.name) for c in back.classes] == [(c.id, c.name) for c in truth.classes
                                                     if c.id == 0 or any((truth.frames[k][0] == c.id).any()
                                                                         for k in truth.frames)]


def test_export_and_import_routes_round_trip(drive, scene_dir, truth):
    app = create_app(Settings(scenes_dir=scene_dir.parent, tokens=json.dumps(TOKENS), warmup=False))
    url = f"/v1/scenes/{scene_dir.name}/segmentation"
    with TestClient(app, raise_server_exceptions=False) as client:
        assert client.put(f"{url}/classes", headers={**ANNOTATOR, "If-Match": "*"},
                          json={"classes": category_classes(drive)}).status_code == 200
        scene = Scene.open(scene_dir)
        kitti = export_semantickitti(scene, truth)
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as z:
            for name, data in kitti.items():
                z.writestr(name, data)
        r = client.post(f"{url}/import/semantickitti", headers={**ANNOTATOR, "If-Match": "*"}, content=buf.getvalue())
        assert r.status_code == 200, r.text
        for fmt in EXPORTERS:
            r = client.get(f"{url}/export/{fmt}", headers=ADMIN)
            assert r.status_code == 200, (fmt, r.text)
            with zipfile.ZipFile(io.BytesIO(r.content)) as z:
                files = {n: z.read(n) for n in z.namelist()}
            assert_same(IMPORTERS[fmt](scene, files), truth, classes=fmt == "semantickitti")
        r = client.post(f"{url}/import/sfs", headers={**ANNOTATOR, "If-Match": "*"}, content=b"not a zip")
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body"]
    assert app.state.fathom.server_errors == 0
