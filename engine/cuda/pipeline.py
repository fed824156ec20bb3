"""A frame's fusion stages on the GPU with the frame's data kept there.

:class:`DeviceFrame` is :class:`engine.frame_stages.FrameStages` on the device: the points
(and their offsets) go up once, through pinned memory, on the calling thread's stream; each
stage queues its kernels on that stream and leaves its output on the device for the next
(projection → z-buffer → visibility mask and colour; box ids; level-of-detail flags); the
images go up once, in one array; :meth:`DeviceFrame.fetch` queues the copies of every result
down and waits once. The workers of a job each have their own stream and buffers
(:mod:`engine.cuda._jit`), so one frame's copies overlap another's kernels.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from numba import cuda

from engine.camera import Camera
from engine.colorize import Interpolation, colorize_inputs
from engine.cuda._jit import kernel, launch, workspace
from engine.cuda.boxes import launch_labels
from engine.cuda.colorize import launch_colorize
from engine.cuda.projection import DeviceProjection, launch_project
from engine.cuda.voxel import launch_first_points
from engine.cuda.zbuffer import launch_zbuffer
from engine.frame_stages import FrameStages, check_mask_bits
from engine.moving_boxes import at_times_inputs
from engine.projection import projection_inputs
from engine.voxel import level_grids
from engine.zbuffer import splat_half


@kernel
def _mask(visible, bits, mask):
    """``mask[i]``: bit ``bits[c]`` set for each camera ``c`` that sees point ``i``."""
    i = cuda.grid(1)
    if i < mask.shape[0]:
        m = np.uint32(0)
        for c in range(visible.shape[0]):
            if visible[c, i]:
                m |= np.uint32(1) << bits[c]
        mask[i] = m


class DeviceFrame(FrameStages):
    """:class:`FrameStages` queued on the GPU (module docstring); same arguments, checks
    and results."""

    def __init__(self, xyz: np.ndarray, offsets_ns: np.ndarray) -> None:
        super().__init__(xyz, offsets_ns)
        ws = workspace()
        self._xyz_dev = ws.upload("frame.xyz", self.xyz)
        self._offsets_dev = ws.upload("frame.offsets", self.offsets_ns)
        self._pending: dict[str, Any] = {}  # result name -> device array

    def project(self, cameras: Sequence[Camera], **kwargs: Any) -> None:
        args = projection_inputs(self.xyz, cameras, **{"frame": "world", **kwargs})
        self._projection = launch_project(args, self._xyz_dev, "frame.projection")

    def zbuffer(self, radius_px: int = 2, tolerance_m: float = 0.1, tolerance_rel: float = 0.02) -> None:
        half = splat_half(radius_px, tolerance_m, tolerance_rel)
        self._visible = launch_zbuffer(self._needs_projection(), half, tolerance_m, tolerance_rel, "frame.zbuffer")

    def camera_mask(self, bits: Sequence[int]) -> None:
        visible = self._needs_visibility()
        bit = workspace().upload("frame.mask_bits", check_mask_bits(bits, visible.shape[0]))
        mask = workspace().device("frame.mask", (visible.shape[1],), np.uint32)
        launch(_mask, visible.shape[1], visible, bit, mask)
        self._pending["camera_mask"] = mask

    def colorize(self, cameras: Sequence[Camera], images: Sequence[np.ndarray | None],
                 scales: Sequence[float] | None = None, interpolation: Interpolation = "bilinear") -> None:
        proj: DeviceProjection = self._needs_projection()
        args = colorize_inputs(proj.cos_view.shape, None, cameras, images, interpolation)
        rgb, _ = launch_colorize(proj, self._needs_visibility(), args, self._scales(scales, len(cameras)),
                                 "frame.colorize")
        self._pending["rgb"] = rgb
        self._rgb_shape = (len(self.xyz),) + args.tail

    def box_ids(self, **query: Any) -> None:
        args = at_times_inputs(self.xyz, self.offsets_ns, **query)
        if len(args.xyz) == 0 or len(args.centers) == 0:
            self._results["box_id"] = np.full(len(args.xyz), -1, np.int32)
            return
        self._pending["box_id"] = launch_labels(args, self._xyz_dev, self._offsets_dev, "frame.boxes")

    def lods(self, voxel_sizes: Sequence[float | np.ndarray], origin: np.ndarray | None = None) -> None:
        p, grids = level_grids(self.xyz, voxel_sizes, origin)
        self._pending["lods"] = launch_first_points(p, self._xyz_dev, grids, "frame.voxel")

    def fetch(self) -> dict[str, Any]:
        ws = workspace()
        host = {name: ws.download(f"frame.out.{name}", dev) for name, dev in self._pending.items()}
        ws.sync()
        out = dict(self._results)
        for name, values in host.items():
            if name == "lods":
                out[name] = [np.flatnonzero(row) for row in values]
            elif name == "rgb":
                out[name] = np.array(values).reshape(self._rgb_shape)
            else:
                out[name] = np.array(values)
        return out


def warmup() -> None:
    """Compile (or load from the cache) every GPU kernel on tiny inputs."""
    from engine.camera import CameraIntrinsics
    from engine.pose_track import PoseTrack
    from engine.se3 import SE3

    track = PoseTrack(np.array([0, 10]), np.array([[1.0, 0, 0, 0]] * 2), np.zeros((2, 3)))
    cams = [Camera("a", CameraIntrinsics(4, 4, 2.0, 2.0, 2.0, 2.0), SE3.identity())]
    box = (np.zeros((1, 3)), np.ones((1, 3)), np.array([[1.0, 0, 0, 0]]))
    moving = (np.zeros(0, np.int64), np.zeros(1, np.int64), np.zeros((1, 0, 3)), np.zeros((1, 0, 3)),
              np.zeros((1, 0, 4)), np.zeros((1, 0), bool))
    frame = DeviceFrame(np.array([[0.0, 0.0, 1.0]]), np.array([5]))
    frame.project(cams, world_from_ego=track, camera_times_ns=[5])
    frame.zbuffer()
    frame.camera_mask([0])
    frame.colorize(cams, [np.zeros((4, 4, 3), np.uint8)], [0.5])
    frame.box_ids(step_ns=1, centers=box[0], sizes=box[1], rotations=box[2], moving=moving[0], steps=moving[1],
                  moving_centers=moving[2], moving_sizes=moving[3], moving_rotations=moving[4], moving_valid=moving[5])
    frame.lods([0.1])
    frame.fetch()
