"""A frame's fusion stages behind one interface, run on the CPU or kept on the GPU.

``fathom prepare`` runs, per frame and on world points: projection into the cameras, the
z-buffer, the per-camera visibility mask, colour from the (possibly reduced-scale) images,
each point's box and the level-of-detail grids. :class:`FrameStages` runs them on the CPU as
each is asked for; :class:`engine.cuda.pipeline.DeviceFrame` queues the same calls on the
GPU with the frame's data kept there (one copy up of the points and images, one copy down
of the results). :meth:`FrameStages.fetch` returns the results either way; :func:`frame_stages`
picks the implementation for a device.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from engine.arrays import as_points
from engine.camera import Camera
from engine.colorize import Interpolation, colorize
from engine.cuda import Device, resolve
from engine.moving_boxes import points_in_boxes_at_times
from engine.projection import Projection, project_points
from engine.voxel import first_points_levels
from engine.zbuffer import zbuffer


def check_mask_bits(bits: Sequence[int], n_cam: int) -> np.ndarray:
    """``(C,) uint32`` bit of each camera in a ``camera_mask``; ``ValueError`` unless one
    distinct bit in [0, 32) per camera."""
    b = np.asarray(bits, np.int64).reshape(-1)
    if len(b) != n_cam or np.any((b < 0) | (b >= 32)) or len(np.unique(b)) != len(b):
        raise ValueError(f"bits must be {n_cam} distinct camera bits in [0, 32), got {list(bits)}")
    return b.astype(np.uint32)


class FrameStages:
    """One frame's stages on the CPU, on ``xyz`` ``(N, 3)`` world points (float32/64, m)
    fired at ``offsets_ns`` ``(N,) int64``. Each method checks its arguments as the engine
    function it runs; call :meth:`project` before :meth:`zbuffer`, and that before
    :meth:`camera_mask` and :meth:`colorize`."""

    def __init__(self, xyz: np.ndarray, offsets_ns: np.ndarray) -> None:
        self.xyz = as_points(xyz)
        self.offsets_ns = np.ascontiguousarray(offsets_ns, np.int64)
        if self.offsets_ns.shape != (len(self.xyz),):
            raise ValueError(f"offsets_ns must have shape ({len(self.xyz)},), got {self.offsets_ns.shape}")
        self._projection: Any = None  # a Projection (a device one on the GPU)
        self._visible: Any = None  # (C, N) bool (on the device on the GPU)
        self._results: dict[str, Any] = {}

    def project(self, cameras: Sequence[Camera], **kwargs: Any) -> None:
        """:func:`engine.projection.project_points` of the points (``frame`` defaults to
        ``"world"``)."""
        self._projection = project_points(self.xyz, cameras, **{"frame": "world", **kwargs}, device="cpu")

    def zbuffer(self, radius_px: int = 2, tolerance_m: float = 0.1, tolerance_rel: float = 0.02) -> None:
        """:func:`engine.zbuffer.zbuffer`'s visibility of the projection."""
        self._visible = zbuffer(self._needs_projection(), radius_px, tolerance_m, tolerance_rel, device="cpu").visible

    def camera_mask(self, bits: Sequence[int]) -> None:
        """Result ``camera_mask``: ``(N,) uint32`` with bit ``bits[c]`` set where camera ``c``
        sees the point."""
        visible = self._needs_visibility()
        bit = check_mask_bits(bits, len(visible))
        mask = np.zeros(visible.shape[1], np.uint32)
        for row, b in zip(visible, bit):
            mask |= row.view(np.uint8).astype(np.uint32) << b
        self._results["camera_mask"] = mask

    def colorize(self, cameras: Sequence[Camera], images: Sequence[np.ndarray | None],
                 scales: Sequence[float] | None = None, interpolation: Interpolation = "bilinear") -> None:
        """Result ``rgb``: :func:`engine.colorize.colorize`'s colours from ``images``, camera
        ``c``'s decoded at ``scales[c]`` (default 1) of the projected camera's size;
        ``cameras`` are the cameras of those images (``formats.jpeg.scaled_camera``). The
        projection's pixels move, in place, to those images: ``u' = s (u + 0.5) - 0.5``, the
        operations of ``formats.jpeg.scale_pixels``."""
        proj = self._needs_projection()
        for row, s in zip(proj.uv, self._scales(scales, len(proj.uv))):
            if s != 1.0:
                row += 0.5
                row *= s
                row -= 0.5
        sizes = np.array([[c.intrinsics.width, c.intrinsics.height] for c in cameras], np.int64).reshape(-1, 2)
        self._projection = Projection(proj.uv, proj.depth, proj.in_image, sizes, proj.cos_view)
        self._results["rgb"] = colorize(self._projection, self._needs_visibility(), cameras, images, interpolation,
                                        device="cpu").colors

    def box_ids(self, **query: Any) -> None:
        """Result ``box_id``: :func:`engine.moving_boxes.points_in_boxes_at_times` of the
        points at their offsets (``query``: its other arguments)."""
        self._results["box_id"] = points_in_boxes_at_times(self.xyz, self.offsets_ns, **query, device="cpu")

    def lods(self, voxel_sizes: Sequence[float | np.ndarray], origin: np.ndarray | None = None) -> None:
        """Result ``lods``: :func:`engine.voxel.first_points_levels` of the points."""
        self._results["lods"] = first_points_levels(self.xyz, voxel_sizes, origin, device="cpu")

    def fetch(self) -> dict[str, Any]:
        """The results asked for: ``camera_mask``, ``rgb``, ``box_id``, ``lods``."""
        return dict(self._results)

    def _needs_projection(self) -> Any:
        if self._projection is None:
            raise ValueError("project() must run first")
        return self._projection

    def _needs_visibility(self) -> Any:
        if self._visible is None:
            raise ValueError("zbuffer() must run first")
        return self._visible

    @staticmethod
    def _scales(scales: Sequence[float] | None, n_cam: int) -> list[float]:
        out = [1.0] * n_cam if scales is None else [float(s) for s in scales]
        if len(out) != n_cam or not all(0.0 < s <= 1.0 for s in out):
            raise ValueError(f"scales must be {n_cam} decoding scales in (0, 1], got {scales}")
        return out


def frame_stages(xyz: np.ndarray, offsets_ns: np.ndarray, device: Device | None = None) -> FrameStages:
    """The frame's stages on ``device`` (``"cpu"``, ``"cuda"``, ``"auto"``; default
    :func:`engine.cuda.get_device`)."""
    if resolve(device) == "cuda":
        from engine.cuda.pipeline import DeviceFrame

        return DeviceFrame(xyz, offsets_ns)
    return FrameStages(xyz, offsets_ns)
