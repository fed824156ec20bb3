"""Small synthetic prepared scenes for the store and server tests (built with the store writer)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from engine.camera import Camera, CameraIntrinsics
from engine.points_in_boxes import points_in_boxes
from engine.quaternion import from_yaw
from engine.se3 import SE3
from formats.scene_store import FrameBoxes, Lidar, SceneOrigin, SceneWriter, points_table

T0 = 1_700_000_000_000_000_000
DT = 100_000_000  # 10 Hz
TOKENS = {"viewer-token-1": "viewer", "annotator-token-1": "annotator", "admin-token-1": "admin"}
# camera x right = −ego y, camera y down = −ego z, camera z forward = ego x
CAM_ROT = np.array([0.5, -0.5, 0.5, -0.5])


def ego_pose(i: int) -> SE3:
    """Ego at frame i: 10 m/s along world x with a slow yaw, 1.5 m up."""
    return SE3(from_yaw(0.05 * i), np.array([1.0 * i, 0.2 * i, 1.5]))


def frame_xyz(i: int, n: int = 2000) -> np.ndarray:
    """World points of frame i (float64): a ring of clutter and a dense block at (10, 0, 0.5)."""
    rng = np.random.default_rng(100 + i)
    r = rng.uniform(3, 40, n)
    a = rng.uniform(-np.pi, np.pi, n)
    clutter = np.column_stack([r * np.cos(a) + i, r * np.sin(a), rng.uniform(-1, 3, n)])
    block = rng.uniform([9.0, -0.9, 0.0], [11.0, 0.9, 1.4], (200, 3))  # inside the 'car-1' box
    return np.vstack([clutter, block]) + np.array([0.0, 0.0, 0.0])


def millimetres(xyz: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The store's 1 mm quantisation of ``(N, 3)`` float64 positions in plain NumPy: ``(q (N, 3)
    int32, offset + q * 1e-3 (N, 3) float64)``, the offset the per-axis minimum rounded down to
    a millimetre (``formats.scene_store.points_table``'s rule)."""
    offset = np.floor(xyz.min(axis=0) / 1e-3) * 1e-3
    q = np.rint((xyz - offset) / 1e-3)
    return q.astype(np.int32), offset + q * 1e-3


def camera() -> Camera:
    return Camera("CAM_FRONT", CameraIntrinsics(64, 48, 40.0, 40.0, 31.5, 23.5),
                  SE3(CAM_ROT, np.array([1.0, 0.0, 0.0])))


def jpeg(i: int) -> bytes:
    img = np.zeros((48, 64, 3), np.uint8)
    img[:, :, 0] = np.arange(64, dtype=np.uint8)[None, :] * 4
    img[:, :, 1] = 40 * i % 256
    ok, buf = cv2.imencode(".jpg", img)
    assert ok
    return buf.tobytes()


def prepared_boxes(i: int) -> FrameBoxes:
    """The prepared boxes of frame i: the 'car-1' box of :func:`car_track` (world and ego)."""
    center, rotation = np.array([[10.0, 0.0, 0.7]]), np.array([[1.0, 0, 0, 0]])
    ego = ego_pose(i).inverse() @ SE3(rotation, center)
    return FrameBoxes(T0 + i * DT, ("car-1",), ("car",), np.array([[4.2, 1.9, 1.5]]), center, rotation,
                      ego.translation, ego.rotation)


def write_scene(root: Path, scene_id: str = "demo", n_frames: int = 3) -> Path:
    """A finished scene: ``n_frames`` frames with one level of detail and a camera image each;
    frames 0 and 1 were prepared with labels (boxes file and ``box_id``), the others without."""
    writer = SceneWriter(
        root / scene_id, scene_id=scene_id, origin=SceneOrigin((500_000.0, 4_000_000.0, 12.0), (36.1, -5.3, 12.0)),
        lidars=[Lidar("LIDAR_TOP", SE3(np.array([1.0, 0, 0, 0]), np.array([0.0, 0.0, 1.8])))], cameras=[camera()],
    )
    for i in range(n_frames):
        xyz = frame_xyz(i)
        n = len(xyz)
        rng = np.random.default_rng(i)
        boxes = prepared_boxes(i) if i < 2 else None
        labels = {} if boxes is None else {"box_id": points_in_boxes(
            xyz, boxes.world_centers, boxes.sizes, boxes.world_rotations)[0].astype(np.int32)}
        full = points_table(
            xyz, intensity=rng.uniform(0, 1, n).astype(np.float32), rgb=rng.integers(0, 256, (n, 3), dtype=np.uint8),
            time_offset_ns=np.linspace(-50_000_000, 50_000_000, n).astype(np.int64),
            sensor_id=np.zeros(n, np.uint8), ring=(np.arange(n) % 32).astype(np.uint16), **labels,
        )
        writer.write_frame(i, T0 + i * DT, ego_pose(i), full, [np.arange(0, n, 4)], images={"CAM_FRONT": jpeg(i)},
                           image_timestamps_ns={"CAM_FRONT": T0 + i * DT + 5_000_000}, boxes=boxes)
    writer.finalize()
    return root / scene_id


def car_track(t_first: int = T0, t_last: int = T0 + 2 * DT) -> dict:
    return {
        "id": "car-1", "category": "car", "attributes": {"color": "red"},
        "keyframes": [
            {"timestamp_ns": t_first, "center": [10.0, 0.0, 0.7], "size": [4.2, 1.9, 1.5], "rotation": [1, 0, 0, 0]},
            {"timestamp_ns": t_last, "center": [10.0, 0.0, 0.7], "size": [4.2, 1.9, 1.5], "rotation": [1, 0, 0, 0]},
        ],
    }
