"""``fathom prepare`` on the synthetic rig's raw log: ground truth (points, colours,
per-camera visibility, label boxes and per-point box ids), resumability, failures, parallel
execution (processes and a Dask LocalCluster) with byte-identical output."""

from __future__ import annotations

import filecmp
import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from engine import quaternion as quat
from engine.cuboid import CuboidTrack
from engine.cuboid_interp import TrackTable, interpolate_tracks
from engine.motion import motion_compensate
from engine.projection import project_points
from engine.zbuffer import zbuffer
from formats.raw_log import read_log, write_labels
from formats.scene_store import Scene
from server.frame_points import world_points
from server.label_boxes import LabelTracks, box_ids, boxes_at
from server.payloads import point_fields, points_payload
from server.prepare import PrepareOptions, prepare
from server.simulate import write_drive_log
from tests.naive import boxes_at_times

ROOT = Path(__file__).resolve().parents[1]
SIDECARS = "[0-9]" * 6 + ".json"  # frames/NNNNNN.json, not the boxes files


@pytest.fixture(scope="module")
def raw_log(drive, tmp_path_factory) -> Path:
    return write_drive_log(tmp_path_factory.mktemp("log"), drive)


@pytest.fixture(scope="module")
def reference_scene(raw_log, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("scene") / "road-0"
    summary = prepare(raw_log, out)
    assert summary.prepared == len(read_log(raw_log).frames) and not summary.failed
    return out


@pytest.fixture(scope="module")
def labelled_scene(drive, raw_log, tmp_path_factory) -> Path:
    """The raw log plus ``labels.json`` holding the simulator's true tracks, prepared."""
    log = tmp_path_factory.mktemp("labelled") / "log"
    shutil.copytree(raw_log, log)
    write_labels(log, [*drive.static_tracks, *drive.actor_tracks])
    doc = json.loads((log / "log.json").read_text())
    (log / "log.json").write_text(json.dumps(dict(doc, labels="labels.json")))
    out = log.parent / "scene"
    summary = prepare(log, out)
    assert summary.prepared == summary.frames and not summary.failed
    return out


def _files(scene: Path) -> list[str]:
    return sorted(str(p.relative_to(scene)) for p in scene.rglob("*") if p.is_file())


def assert_identical(a: Path, b: Path) -> None:
    assert _files(a) == _files(b)
    match, mismatch, errors = filecmp.cmpfiles(a, b, _files(a), shallow=False)
    assert not mismatch and not errors


def test_points_land_where_the_simulator_put_them(drive, reference_scene):
    scene = Scene.open(reference_scene)
    assert len(scene.frames) == len(drive.frame_times_ns)
    for i in (0, len(drive.frame_times_ns) - 1):
        truth = []
        for lidar in drive.lidars:
            sweep = drive.sweeps[lidar.name][i]
            times = sweep.time_offset_ns + np.int64(sweep.timestamp_ns)
            truth.append(motion_compensate(sweep.xyz, times, drive.world_from_ego, lidar.ego_from_lidar,
                                           out_frame="world"))
        truth = np.concatenate(truth)
        table = scene.points(i)
        stored = np.stack([table[c].to_numpy() for c in "xyz"], axis=1)
        # prepared from the 100 Hz GNSS/INS log, checked against the 1 kHz true trajectory
        assert np.abs(stored - truth).max() < 0.005
        sensor = table["sensor_id"].to_numpy()
        expect = np.concatenate([np.full(len(drive.sweeps[l.name][i]), l.sensor_id) for l in drive.lidars])
        np.testing.assert_array_equal(sensor, expect)


def test_points_take_the_colour_of_the_object_they_hit(drive, reference_scene):
    scene = Scene.open(reference_scene)
    hits = agree = 0
    for i in range(len(scene.frames)):
        table = scene.points(i)
        rgb = np.stack([table[c].to_numpy() for c in "rgb"], axis=1).astype(int)
        ids = np.concatenate([drive.sweeps[l.name][i].extra["object_id"] for l in drive.lidars])
        coloured = rgb.any(axis=1)
        expect = drive.objects.color_rgb[ids].astype(int)
        close = np.abs(rgb - expect).max(axis=1) <= 24  # JPEG ringing on flat colours
        hits += coloured.sum()
        agree += (close & coloured).sum()
    assert hits > 1000
    # small test cameras (192×108 px): JPEG blocks and object edges cost a few per cent
    assert agree / hits >= 0.95


def test_level_of_detail_grids_are_the_first_point_of_each_voxel(raw_log, reference_scene):
    """Level k holds the first point (in the frame's row order) of every occupied voxel of
    the k-th size, on the world grid ``floor(p * (1 / size))`` (engine.voxel's): a NumPy
    reference on the frame's float64 world points."""
    scene = Scene.open(reference_scene)
    log = read_log(raw_log)
    xyz = world_points(log, log.world_from_ego(), 0)["xyz"]
    full = scene.points(0)
    sizes = [len(full)]
    for lod, size in enumerate(PrepareOptions().lod_voxel_m, start=1):
        keys = np.floor(xyz * (1.0 / size)).astype(np.int64)
        _, first = np.unique(keys, axis=0, return_index=True)
        np.testing.assert_array_equal(scene.lod_rows(0, lod), np.sort(first))
        sizes.append(len(scene.points(0, lod)))
    assert sizes[0] > sizes[1] > sizes[2] > 0


def test_rerun_skips_finished_frames(raw_log, reference_scene, tmp_path):
    summary = prepare(raw_log, reference_scene)
    assert summary.prepared == 0 and summary.skipped == summary.frames


def test_killed_run_resumes_to_a_byte_identical_scene(raw_log, reference_scene, tmp_path):
    out = tmp_path / "road-0"
    # the job kills itself (SIGKILL, no clean-up) as the third finished frame is reported, while
    # its worker goes on with the next one: mid-way whatever the machine's speed
    child = ("import os, signal, sys; from server.prepare import prepare\n"
             "done = []\n"
             "def report(result):\n"
             "    done.append(result)\n"
             "    if len(done) == 3:\n"
             "        os.kill(os.getpid(), signal.SIGKILL)\n"
             "prepare(sys.argv[1], sys.argv[2], workers=1, progress=report)\n")
    proc = subprocess.run([sys.executable, "-c", child, str(raw_log), str(out)], cwd=ROOT, timeout=300,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert proc.returncode == -signal.SIGKILL
    done = len(list((out / "frames").glob(SIDECARS)))
    assert 3 <= done < len(read_log(raw_log).frames), "the kill should land mid-way"
    assert not (out / "scene.json").exists() or not Scene.open(out).frames  # killed before finalize
    # a temporary file as a write cut short by the kill leaves it (whether or not this kill did)
    (out / "frames" / ".000009.arrow.killed.tmp").write_bytes(b"half a frame")
    summary = prepare(raw_log, out)
    assert summary.skipped >= 3 and not summary.failed
    assert_identical(reference_scene, out)


def test_frame_files_torn_after_the_run_are_redone_alone(raw_log, reference_scene, tmp_path):
    """What a power loss can leave of unsynced frame files (they are fsynced only by
    finalize): a file cut short, one zeroed at its full size, a lost sidecar. The resumed
    job redoes exactly those frames, with ``durable`` writes giving the same bytes."""
    out = tmp_path / "road-0"
    shutil.copytree(reference_scene, out)
    frames = out / "frames"
    data = (frames / "000001.arrow").read_bytes()
    (frames / "000001.arrow").write_bytes(data[: len(data) // 2])
    (frames / "000003.lod1.rows").write_bytes(bytes((frames / "000003.lod1.rows").stat().st_size))
    (frames / "000004.json").write_bytes(b"")
    redone = []
    summary = prepare(raw_log, out, durable=True, progress=lambda r: None if r.skipped else redone.append(r.index))
    assert sorted(redone) == [1, 3, 4] and summary.prepared == 3 and not summary.failed
    assert summary.skipped == summary.frames - 3
    assert_identical(reference_scene, out)


def test_a_corrupt_frame_fails_alone_with_a_clear_report(raw_log, tmp_path):
    import shutil

    log = tmp_path / "log"
    shutil.copytree(raw_log, log)
    victim = log / "lidar" / "LIDAR_TOP" / "000002.pcd"
    victim.write_bytes(victim.read_bytes()[:-100])
    summary = prepare(log, tmp_path / "scene")
    assert [r.index for r in summary.failed] == [2]
    assert "FormatError" in summary.failed[0].error and "000002.pcd" in summary.failed[0].error
    assert summary.prepared == summary.frames - 1
    assert [f.index for f in Scene.open(tmp_path / "scene").frames] == [
        i for i in range(summary.frames) if i != 2
    ]


def test_worker_threads_processes_and_dask_give_identical_output(raw_log, reference_scene, tmp_path):
    pytest.importorskip("distributed")
    for name, kwargs in (("threads", {"workers": 2}), ("procs", {"workers": 2, "processes": True}),
                         ("dask", {"workers": 2, "dask": "local"})):
        out = tmp_path / name / "road-0"
        summary = prepare(raw_log, out, **kwargs)
        assert summary.prepared == summary.frames and not summary.failed
        assert_identical(reference_scene, out)


def test_missing_or_broken_manifest_is_a_format_error(tmp_path):
    from formats.errors import FormatError

    with pytest.raises(FormatError, match="log.json"):
        prepare(tmp_path, tmp_path / "scene")
    (tmp_path / "log.json").write_text('{"format": "fathom-log", "version": 1, "poses": {"kind": "table", '
                                       '"path": "../../etc/passwd"}}')
    with pytest.raises(FormatError, match="leaves it"):
        prepare(tmp_path, tmp_path / "scene")


def test_camera_mask_is_the_z_buffered_visibility_per_camera(raw_log, reference_scene):
    scene = Scene.open(reference_scene)
    log = read_log(raw_log)
    track = log.world_from_ego()
    assert [c for c in scene.cameras] == [c.name for c in log.cameras]
    blind = 0
    for i in (0, len(log.frames) - 1):
        xyz = world_points(log, track, i)["xyz"]
        times = np.array([log.frames[i].images[c.name][1] for c in log.cameras])
        proj = project_points(xyz, log.cameras, world_from_ego=track, frame="world", camera_times_ns=times)
        visible = zbuffer(proj).visible
        expect = np.zeros(len(xyz), np.int64)
        for k in range(len(log.cameras)):
            expect += visible[k].astype(np.int64) << k
        got = scene.points(i)["camera_mask"].to_numpy()
        assert got.dtype == (np.uint8 if len(log.cameras) <= 8 else np.uint16)  # the narrowest for the bits
        np.testing.assert_array_equal(got, expect)
        assert (got != 0).mean() > 0.3 and all((got >> k & 1).any() for k in range(len(log.cameras)))
        # the test rig has no camera looking right: points there are seen by none
        ego = track.at(log.frames[i].timestamp_ns).inverse().apply(xyz)
        azimuth = np.degrees(np.arctan2(ego[:, 1], ego[:, 0]))
        right = (azimuth > -125) & (azimuth < -55) & (np.hypot(ego[:, 0], ego[:, 1]) > 4.0)
        assert not got[right].any()
        blind += right.sum()
    assert blind > 100


def test_levels_of_detail_keep_every_column_of_their_points(labelled_scene):
    scene = Scene.open(labelled_scene)
    cols = ["xq", "yq", "zq", "camera_mask", "box_id", "r", "g", "b", "intensity"]
    full = scene.points(0)
    rows = set(zip(*(full[c].to_numpy() for c in cols)))
    for lod in (1, 2):
        table = scene.points(0, lod)
        assert table.schema == full.schema
        assert set(zip(*(table[c].to_numpy() for c in cols))) <= rows


def test_a_prepared_frame_stores_its_columns_in_their_narrowest_widths(raw_log, labelled_scene):
    """Bytes per point of a prepared points file: the width each column's rule gives for this
    frame's values (intensity, ring, camera_mask, box_id narrow; x y z not stored), times the
    points, each buffer padded to 8 bytes, plus the Arrow framing (measured on 64 rows)."""
    from formats.scene_store import write_arrow_file

    log = read_log(raw_log)
    scene = Scene.open(labelled_scene)
    cols = world_points(log, log.world_from_ego(), 0)
    intensity = cols["intensity"]
    whole = np.array_equal(intensity, np.rint(intensity)) and intensity.min() >= 0
    n_boxes = len(scene.boxes(0))
    widths = {"xq": 4, "yq": 4, "zq": 4,
              "intensity": 4 if not whole else 1 if intensity.max() < 2**8 else 2 if intensity.max() < 2**16 else 4,
              "r": 1, "g": 1, "b": 1, "time_offset_ns": 4, "sensor_id": 1,
              "ring": 1 if cols["ring"].max() < 2**8 else 2,
              "camera_mask": 1 if len(log.cameras) <= 8 else 2 if len(log.cameras) <= 16 else 4,
              "box_id": 1 if n_boxes <= 2**7 else 2 if n_boxes <= 2**15 else 4}
    stored = scene.stored_points(0)
    assert {f.name: f.type.bit_width // 8 for f in stored.schema} == widths
    n = scene.frame(0).n_points

    def body(rows: int) -> int:
        return sum(-(-rows * w // 8) * 8 for w in widths.values())

    sink = pa.MockOutputStream()
    write_arrow_file(stored.slice(0, 64), sink)
    framing = sink.size() - body(64)
    assert 0 < framing < 4096
    assert scene.frame(0).points.bytes == body(n) + framing
    # levels of detail: 4 bytes per row of theirs
    assert [f.bytes for f in scene.frame(0).lods] == [4 * m for m in scene.frame(0).lod_points]


def test_frame_boxes_are_the_true_boxes_at_the_frame_time(drive, labelled_scene):
    scene = Scene.open(labelled_scene)
    world = drive.world
    for i, t in enumerate(drive.frame_times_ns):
        boxes = scene.boxes(i)
        assert boxes.timestamp_ns == t
        # every static box and every actor exists through the whole drive
        assert sorted(int(b) for b in boxes.track_ids) == list(range(1, 1 + world.n_static + world.n_actors))
        pose = drive.world_from_ego.at(int(t))
        for k, tid in enumerate(boxes.track_ids):
            center, size, yaw = world.box_at(int(tid), int(t))
            assert boxes.categories[k] == drive.objects.category[int(tid)]
            np.testing.assert_allclose(boxes.sizes[k], size, atol=1e-9)
            assert np.abs(boxes.world_centers[k] - center).max() < 0.05
            assert quat.angle_between(boxes.world_rotations[k], quat.from_yaw(yaw)) < 1e-6
            # ego frame: against the true (1 kHz) ego pose; prepare used the 100 Hz GNSS/INS track
            assert np.abs(boxes.ego_centers[k] - pose.inverse().apply(center[None])[0]).max() < 0.05
            ego_rotation = quat.multiply(quat.conjugate(pose.rotation), quat.from_yaw(yaw))
            assert quat.angle_between(boxes.ego_rotations[k], ego_rotation) < 2e-3


def _inside_true_box(world, object_ids: np.ndarray, xyz: np.ndarray, times_ns: np.ndarray, tol_m: float) -> np.ndarray:
    """Whether each point lies in the simulator's box ``object_ids[i]`` at ``times_ns[i]``
    (plain NumPy; half-extents grown by ``tol_m``)."""
    inside = np.zeros(len(xyz), bool)
    for oid in np.unique(object_ids):
        sel = np.flatnonzero(object_ids == oid)
        if oid <= world.n_static:
            center, size, yaw = world.box_at(int(oid), 0)
            centers, yaws = np.broadcast_to(center, (len(sel), 3)), np.full(len(sel), yaw)
        else:
            centers, yaws = world.actor_pose(int(oid) - 1 - world.n_static, times_ns[sel])
            size = world.actor_size[int(oid) - 1 - world.n_static]
        d = xyz[sel] - centers
        c, s = np.cos(yaws), np.sin(yaws)
        local = np.column_stack([c * d[:, 0] + s * d[:, 1], -s * d[:, 0] + c * d[:, 1], d[:, 2]])
        inside[sel] = np.all(np.abs(local) <= 0.5 * size + tol_m, axis=1)
    return inside


def test_box_ids_are_the_objects_the_lidar_hit(drive, labelled_scene):
    scene = Scene.open(labelled_scene)
    checked = agree = 0
    for i, t in enumerate(drive.frame_times_ns):
        table = scene.points(i)
        box_id = table["box_id"].to_numpy()
        ids = np.array([int(t) for t in scene.boxes(i).track_ids])
        got = np.where(box_id >= 0, ids[np.maximum(box_id, 0)], 0)  # 0: ground
        hit = np.concatenate([drive.sweeps[l.name][i].extra["object_id"] for l in drive.lidars])
        # every return off a box gets a box
        assert not np.any((hit > 0) & (got == 0))
        # and the box it gets holds it at its firing time, within the 2 cm tolerance (+ 5 mm
        # for the GNSS/INS deskew): where it is not the box hit, two boxes (or a box and the
        # ground beside its foot) lie within the tolerance
        xyz = np.column_stack([table[c].to_numpy() for c in "xyz"]).astype(np.float64)
        times = table["time_offset_ns"].to_numpy() + np.int64(t)
        boxed = got > 0
        assert _inside_true_box(drive.world, got[boxed], xyz[boxed], times[boxed], 0.025).all()
        checked += (hit > 0).sum()
        agree += ((hit > 0) & (got == hit)).sum()
    assert checked > 5000
    assert agree / checked > 0.995, (agree, checked)


def _box_ids_reference(labels: TrackTable, boxes, rows: np.ndarray, xyz: np.ndarray, offsets_ns: np.ndarray,
                       options: PrepareOptions) -> np.ndarray:
    """``box_id`` by the plain NumPy reference: stationary tracks at the frame time, moving ones
    interpolated at the middle of each point's own firing-time step (the occupied steps only)."""
    step = options.box_time_step_ns
    moving = np.flatnonzero(~labels.stationary[rows])
    keys = np.unique(offsets_ns // step)
    at = interpolate_tracks(labels, boxes.timestamp_ns + keys * step + step // 2, "none")
    r = rows[moving]
    return boxes_at_times(xyz, offsets_ns, step, boxes.world_centers, boxes.sizes, boxes.world_rotations, moving,
                          keys, at.centers[:, r], at.sizes[:, r], at.rotations[:, r], at.valid[:, r],
                          options.box_margin_m)


def test_box_ids_equal_the_numpy_reference_at_each_points_firing_time(drive, labelled_scene):
    log = read_log(labelled_scene.parent / "log")
    scene = Scene.open(labelled_scene)
    options = PrepareOptions()
    tracks = log.labels()
    # a variant where the actor hit most (in frame k) stops existing in the middle of its sweep
    actors = [n for n, t in enumerate(tracks) if not t.stationary]
    hits = [np.concatenate([drive.sweeps[l.name][i].extra["object_id"] for l in drive.lidars])
            for i in range(len(log.frames))]
    k, a = max(((i, n) for i in range(len(hits)) for n in actors),
               key=lambda kn: (hits[kn[0]] == int(tracks[kn[1]].track_id)).sum())
    hit, t_k = hits[k], int(drive.frame_times_ns[k])
    world_from_ego = log.world_from_ego()
    offsets_k = world_points(log, world_from_ego, k)["time_offset_ns"]
    cut = int(np.median(offsets_k[hit == int(tracks[a].track_id)]))  # half its hits are later
    end = interpolate_tracks(tracks[a:a + 1], np.array([t_k + cut]))
    keep = tracks[a].timestamps_ns <= t_k
    short = CuboidTrack(tracks[a].track_id, tracks[a].category,
                        np.append(tracks[a].timestamps_ns[keep], end.times_ns),
                        np.concatenate([tracks[a].centers[keep], end.centers[0]]),
                        np.concatenate([tracks[a].sizes[keep], end.sizes[0]]),
                        np.concatenate([tracks[a].rotations[keep], end.rotations[0]]))
    categories = tuple(t.category for t in tracks)
    for variant in (tracks, [*tracks[:a], short, *tracks[a + 1:]]):
        labels = LabelTracks(TrackTable.from_tracks(variant), categories, world_from_ego)
        frames = range(len(log.frames)) if variant is tracks else [k]
        for i in frames:
            cols = world_points(log, world_from_ego, i)
            boxes, rows = boxes_at(labels, log.frames[i].timestamp_ns)
            got = box_ids(labels, boxes, rows, cols["xyz"], cols["time_offset_ns"], options.box_time_step_ns,
                          options.box_margin_m)
            expect = _box_ids_reference(labels.table, boxes, rows, cols["xyz"], cols["time_offset_ns"], options)
            np.testing.assert_array_equal(got, expect)
            assert got.dtype == np.int32 and (got >= 0).sum() > 100
            if variant is tracks:  # what prepare wrote
                np.testing.assert_array_equal(got, scene.points(i)["box_id"].to_numpy())
                if i == k:  # 1 µs steps: too many for every step of the sweep, the occupied ones
                    fine = PrepareOptions(box_time_step_ns=1000)
                    np.testing.assert_array_equal(
                        box_ids(labels, boxes, rows, cols["xyz"], cols["time_offset_ns"], fine.box_time_step_ns,
                                fine.box_margin_m),
                        _box_ids_reference(labels.table, boxes, rows, cols["xyz"], cols["time_offset_ns"], fine))
            else:  # the shortened track holds points up to its end only
                mine = got == list(rows).index(a)
                step = options.box_time_step_ns
                late = cols["time_offset_ns"] // step * step + step // 2 > cut  # its box at their step: none
                assert mine[~late].sum() > 10 and not mine[late].any()
                assert ((hit == int(tracks[a].track_id)) & late).sum() > 10


def test_box_ids_of_no_points_and_of_no_boxes(labelled_scene):
    log = read_log(labelled_scene.parent / "log")
    t0 = log.frames[0].timestamp_ns
    # the actors, from their second keyframe on: none exists at frame 0
    actors = [CuboidTrack(t.track_id, t.category, t.timestamps_ns[1:], t.centers[1:], t.sizes[1:], t.rotations[1:])
              for t in log.labels() if not t.stationary]
    assert all(t.timestamps_ns[0] > t0 for t in actors)
    labels = LabelTracks.from_tracks(actors, log.world_from_ego())
    cols = world_points(log, labels.world_from_ego, 0)
    boxes, rows = boxes_at(labels, log.frames[1].timestamp_ns)
    assert len(rows) == len(actors)
    step, margin = PrepareOptions().box_time_step_ns, PrepareOptions().box_margin_m
    got = box_ids(labels, boxes, rows, cols["xyz"][:0], cols["time_offset_ns"][:0], step, margin)
    assert got.shape == (0,) and got.dtype == np.int32
    boxes, rows = boxes_at(labels, t0)
    assert len(rows) == 0
    got = box_ids(labels, boxes, rows, cols["xyz"], cols["time_offset_ns"], step, margin)
    assert got.dtype == np.int32 and np.all(got == -1) and len(got) == len(cols["xyz"])


def test_the_server_serves_the_new_columns(labelled_scene):
    scene = Scene.open(labelled_scene)
    names = point_fields(scene, 0, None, "world")
    assert "camera_mask" in names and "box_id" in names
    for lod in (0, 1):
        payload = points_payload(scene, 0, lod, ["camera_mask", "box_id"], "world", "arrow")
        sent = pa.ipc.open_stream(bytes(payload.body)).read_all()
        stored = scene.points(0, lod)
        for c in ("camera_mask", "box_id"):
            np.testing.assert_array_equal(sent[c].to_numpy(), stored[c].to_numpy())


def test_an_unlabelled_log_has_no_boxes(raw_log, tmp_path):
    log = tmp_path / "log"
    shutil.copytree(raw_log, log)
    doc = json.loads((log / "log.json").read_text())
    doc.pop("labels", None)
    doc["frames"] = doc["frames"][:2]
    (log / "log.json").write_text(json.dumps(doc))
    assert prepare(log, tmp_path / "scene").prepared == 2
    scene = Scene.open(tmp_path / "scene")
    assert scene.boxes(0) is None and scene.frame(1).boxes is None
    assert "box_id" not in scene.points(0).schema.names and "camera_mask" in scene.points(0).schema.names


def test_more_than_32_cameras_are_refused(raw_log, tmp_path):
    log = tmp_path / "log"
    shutil.copytree(raw_log, log)
    doc = json.loads((log / "log.json").read_text())
    doc["cameras"] = [dict(doc["cameras"][0], name=f"CAM_{k}") for k in range(33)]
    for f in doc["frames"]:
        f["images"] = {}
    (log / "log.json").write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="33 cameras.*at most 32"):
        prepare(log, tmp_path / "scene")


def test_half_size_colour_decoding_keeps_the_colours(drive, raw_log, reference_scene, tmp_path):
    log = tmp_path / "log"
    shutil.copytree(raw_log, log)
    doc = json.loads((log / "log.json").read_text())
    doc["frames"] = doc["frames"][:3]
    (log / "log.json").write_text(json.dumps(doc))
    # every test camera (192 and 320 px wide) decodes at half size: 96 × 54 and 160 × 120 px
    prepare(log, tmp_path / "scene", options=PrepareOptions(colour_min_width_px=48))
    scene = Scene.open(tmp_path / "scene")
    hits = agree = 0
    for i in range(3):
        table = scene.points(i)
        rgb = np.stack([table[c].to_numpy() for c in "rgb"], axis=1).astype(int)
        ids = np.concatenate([drive.sweeps[l.name][i].extra["object_id"] for l in drive.lidars])
        coloured = rgb.any(axis=1)
        close = np.abs(rgb - drive.objects.color_rgb[ids].astype(int)).max(axis=1) <= 24
        hits += coloured.sum()
        agree += (close & coloured).sum()
        # visibility does not depend on the decoding size
        np.testing.assert_array_equal(table["camera_mask"].to_numpy(),
                                      Scene.open(reference_scene).points(i)["camera_mask"].to_numpy())
    assert hits > 1000 and agree / hits >= 0.92
