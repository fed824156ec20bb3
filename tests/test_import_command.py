"""``fathom import SOURCE SRC --out LOG``: datasets laid out as their devkits expect → raw logs."""

from __future__ import annotations

import shutil

import pytest

from formats.errors import FormatError
from formats.import_kitti import import_kitti_tracking
from formats.import_kitti_object import import_kitti_object
from formats.import_pandaset import import_pandaset
from formats.raw_log import read_log
from server.cli import main
from server.import_datasets import ImportOptions, import_jobs
from tests.test_interop_kitti import write_kitti_tracking_fixture
from tests.test_interop_kitti_object import FRAMES, write_kitti_object_fixture
from tests.test_interop_nuscenes import VERSION, write_nuscenes_fixture
from tests.test_interop_pandaset import write_pandaset_fixture


def _same_log(a, b) -> None:
    """Two raw logs hold the same frames, sensors and labels."""
    la, lb = read_log(a), read_log(b)
    assert [f.timestamp_ns for f in la.frames] == [f.timestamp_ns for f in lb.frames]
    assert [l.name for l in la.lidars] == [l.name for l in lb.lidars]
    assert [c.name for c in la.cameras] == [c.name for c in lb.cameras]
    assert [(t.track_id, t.timestamps_ns.tolist(), t.centers.tolist()) for t in la.labels()] == \
           [(t.track_id, t.timestamps_ns.tolist(), t.centers.tolist()) for t in lb.labels()]


@pytest.fixture(scope="module")
def pandaset_root(drive, tmp_path_factory):
    root = tmp_path_factory.mktemp("pandaset")
    write_pandaset_fixture(drive, root / "002")
    shutil.copytree(root / "002", root / "011")
    return root


def test_every_sequence_of_a_dataset_root_becomes_a_log(pandaset_root, tmp_path, capsys):
    assert main(["import", "pandaset", str(pandaset_root), "--out", str(tmp_path / "logs")]) == 0
    out, err = capsys.readouterr()
    assert "imported 2 of 2 scenes (0 failed)" in out
    assert "[1/2] pandaset-002" in err and "[2/2] pandaset-011" in err and "label tracks" in err
    reference = import_pandaset(pandaset_root / "002", tmp_path / "reference")
    for name in ("pandaset-002", "pandaset-011"):
        _same_log(tmp_path / "logs" / name, reference)


def test_one_scene_goes_to_out_itself(pandaset_root, tmp_path, capsys):
    assert main(["import", "pandaset", str(pandaset_root), "--scene", "011", "--out", str(tmp_path / "log")]) == 0
    assert (tmp_path / "log" / "log.json").is_file()
    _same_log(tmp_path / "log", import_pandaset(pandaset_root / "011", tmp_path / "reference"))


def test_a_failing_scene_is_reported_and_the_others_imported(pandaset_root, tmp_path, capsys):
    root = tmp_path / "root"
    shutil.copytree(pandaset_root, root)
    (root / "011" / "lidar" / "timestamps.json").write_text("[1, 2")
    assert main(["import", "pandaset", str(root), "--out", str(tmp_path / "logs")]) == 1
    out, _ = capsys.readouterr()
    assert "imported 1 of 2 scenes (1 failed)" in out
    assert "pandaset-011 FAILED" in out and "timestamps.json" in out
    assert (tmp_path / "logs" / "pandaset-002" / "log.json").is_file()


def test_kitti_sequences_by_number(drive, tmp_path, capsys):
    write_kitti_tracking_fixture(drive, tmp_path / "kitti", sequence=3, images=False)
    assert main(["import", "kitti", str(tmp_path / "kitti"), "--scene", "3", "--no-images",
                 "--out", str(tmp_path / "log")]) == 0
    _same_log(tmp_path / "log", import_kitti_tracking(tmp_path / "kitti", 3, tmp_path / "ref", images=False))


def test_kitti_object_frames_one_log_each_or_one_sequence(drive, tmp_path, capsys):
    write_kitti_object_fixture(drive, tmp_path)
    root = tmp_path / "object"
    assert main(["import", "kitti-object", str(root), "--no-images", "--out", str(tmp_path / "logs")]) == 0
    reference = import_kitti_object(root, tmp_path / "reference", images=False)
    assert [p.name for p in reference] == [f"{i:06d}" for i in FRAMES]
    for i, ref in zip(FRAMES, reference):
        _same_log(tmp_path / "logs" / f"kitti-object-{i:06d}", ref)
        assert read_log(tmp_path / "logs" / f"kitti-object-{i:06d}").log_id == read_log(ref).log_id
    assert main(["import", "kitti-object", str(root), "--scene", str(FRAMES[0]), str(FRAMES[2]), "--layout",
                 "sequence", "--no-images", "--out", str(tmp_path / "seq")]) == 0
    _same_log(tmp_path / "seq", import_kitti_object(root, tmp_path / "ref-seq", frames=[FRAMES[0], FRAMES[2]],
                                                     layout="sequence", images=False)[0])


def test_nuscenes_scenes_by_name(drive, tmp_path, capsys):
    write_nuscenes_fixture(drive, tmp_path / "nus")
    [job] = import_jobs("nuscenes", tmp_path / "nus")  # the only version and its only scene
    assert main(["import", "nuscenes", str(tmp_path / "nus"), "--version", VERSION, "--scene", job.name,
                 "--out", str(tmp_path / "log")]) == 0
    assert len(read_log(tmp_path / "log").frames) > 0 and read_log(tmp_path / "log").labels()


def test_unknown_scenes_and_sources_are_clear_errors(pandaset_root, tmp_path, capsys):
    with pytest.raises(FormatError, match=r"\['007'\]"):
        import_jobs("pandaset", pandaset_root, ["007"])
    with pytest.raises(FormatError, match="no such file"):
        import_jobs("pandaset", tmp_path / "missing")
    with pytest.raises(ValueError, match="unknown source"):
        import_jobs("waymo", pandaset_root)
    with pytest.raises(ValueError, match="--scene does not apply"):
        import_jobs("scale-legacy", tmp_path, ["x"], ImportOptions())
    assert main(["import", "pandaset", str(pandaset_root), "--scene", "007", "--out", str(tmp_path / "o")]) == 2
    assert "007" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_pandaset_without_pandas_says_what_to_install(pandaset_root, tmp_path, capsys, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "pandas", None)  # as in a runtime-only install
    assert main(["import", "pandaset", str(pandaset_root), "--scene", "002", "--out", str(tmp_path / "o")]) == 2
    assert "pip install 'fathom3d[pandaset]'" in capsys.readouterr().err
