"""engine.zbuffer: splatted depth images and nearest-surface visibility."""

from __future__ import annotations

import numpy as np
import pytest

from engine.camera import Camera, CameraIntrinsics
from engine.projection import Projection, project_points
from engine.se3 import SE3
from engine.zbuffer import zbuffer
from tests import naive


def _random_projection(rng, n, sizes):
    c = len(sizes)
    uv = np.empty((c, n, 2))
    for k, (w, h) in enumerate(sizes):
        uv[k, :, 0] = rng.uniform(-3, w + 3, n)
        uv[k, :, 1] = rng.uniform(-3, h + 3, n)
    sizes = np.array(sizes, np.int64)
    in_image = naive.in_image(uv, sizes[:, :1], sizes[:, 1:])
    depth = rng.uniform(1, 50, (c, n)).astype(np.float32)
    return Projection(uv, depth, in_image, sizes, np.ones((c, n), np.float32))


@pytest.mark.parametrize("radius", [0, 1, 3, 7])
def test_matches_numpy_reference(radius):
    rng = np.random.default_rng(radius)
    # different sizes per camera; the 9×4 one is smaller than the disc and the row ring;
    # each camera is swept in bands of about equal numbers of points (engine.zbuffer._BANDS):
    # the 300-row ones hold their points in rows 250..262 only, or in row 120 alone (bands
    # of a row or none, their neighbours' discs reaching across)
    sizes = [(64, 48), (40, 30), (9, 4), (20, 300), (30, 300), (30, 300)]
    proj = _random_projection(rng, 3000, sizes)
    proj.uv[4, :, 1] = rng.uniform(249.5, 262.5, 3000)
    proj.uv[5, :, 1] = 120.0
    proj.in_image[4:] = naive.in_image(proj.uv[4:], 30, 300)
    occ = zbuffer(proj, radius_px=radius, tolerance_m=0.3, tolerance_rel=0.01)
    for c, (w, h) in enumerate(proj.image_sizes):
        img, vis = naive.zbuffer(proj.uv[c], proj.depth[c], proj.in_image[c], w, h, radius, 0.3, 0.01)
        assert occ.depth_images[c].shape == (h, w)
        np.testing.assert_array_equal(occ.depth_images[c], img)
        np.testing.assert_array_equal(occ.visible[c], vis)
    assert 0 < occ.visible.sum() < proj.in_image.sum()


def test_near_wall_hides_far_wall():
    cam = Camera("c", CameraIntrinsics(200, 100, 100.0, 100.0, 99.5, 49.5), SE3.identity())
    g = np.stack(np.meshgrid(np.linspace(-2, 2, 41), np.linspace(-1, 1, 21)), -1).reshape(-1, 2)
    near = np.column_stack([g * 0.5, np.full(len(g), 5.0)])     # 2 m × 1 m at 5 m
    far = np.column_stack([g * 2.0, np.full(len(g), 10.0)])     # 8 m × 4 m at 10 m
    proj = project_points(np.vstack([near, far]), [cam])
    occ = zbuffer(proj, radius_px=2)
    vis_near, vis_far = occ.visible[0, : len(g)], occ.visible[0, len(g) :]
    assert vis_near.all()
    # the near wall covers |u - cx| <= 20 px, |v - cy| <= 10 px; splats reach 2 px further
    du = np.abs(proj.uv[0, len(g) :, 0] - 99.5)
    dv = np.abs(proj.uv[0, len(g) :, 1] - 49.5)
    behind = (du <= 20) & (dv <= 10)
    clear = proj.in_image[0, len(g) :] & ((du > 23) | (dv > 13))
    assert behind.sum() > 20 and clear.sum() > 100
    assert not vis_far[behind].any()
    assert vis_far[clear].all()
    # the depth image holds the near wall's depth at the centre, the far wall's beside it (the
    # far wall spans |u - cx| <= 40 px, |v - cy| <= 20 px), inf where nothing landed
    img = occ.depth_images[0]
    assert img[50, 100] == pytest.approx(5.0) and img[50, 130] == pytest.approx(10.0)
    assert np.isinf(img[0, 0]) and np.isinf(img[50, 160]) and np.isinf(img[90, 100])
    ref, ref_visible = naive.zbuffer(proj.uv[0], proj.depth[0], proj.in_image[0], 200, 100, 2, 0.1, 0.02)
    np.testing.assert_array_equal(img, ref)
    np.testing.assert_array_equal(occ.visible[0], ref_visible)


def test_empty_nan_and_bad_input():
    cam = Camera("c", CameraIntrinsics(8, 6, 4.0, 4.0, 3.5, 2.5), SE3.identity())
    occ = zbuffer(project_points(np.zeros((0, 3)), [cam]))
    assert occ.visible.shape == (1, 0) and np.isinf(occ.depth_images[0]).all()
    occ = zbuffer(project_points(np.array([[np.nan, 0, 1], [0, 0, 1]]), [cam]))
    assert occ.visible.tolist() == [[False, True]]
    proj = project_points(np.zeros((1, 3)), [cam])
    with pytest.raises(ValueError, match="radius_px"):
        zbuffer(proj, radius_px=-1)
    with pytest.raises(ValueError, match="tolerance_m"):
        zbuffer(proj, tolerance_m=np.nan)
    with pytest.raises(ValueError, match="Projection"):
        zbuffer(np.zeros((1, 3)))
