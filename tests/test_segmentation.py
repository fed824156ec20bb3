"""engine.segmentation / engine.segmentation_map / formats.segmentation: selections, edits and
the map transfer against NumPy references, the label encoding round trip and its damage."""

from __future__ import annotations

import numpy as np
import pytest

from engine.pose_track import PoseTrack
from engine.segmentation import (
    INHERIT,
    apply_labels,
    select_box,
    select_lasso,
    select_polygon_2d,
    select_prism,
    select_sphere,
    transfer_labels,
)
from engine.segmentation_map import key_centers, map_cloud, voxel_keys, voxel_labels
from formats.errors import FormatError
from formats.segmentation import classes_from_json, decode_labels, decode_map, encode_labels, encode_map
from tests import naive

RNG = np.random.default_rng(7)
STAR = np.array([[0.0, 3.0], [1.0, 1.0], [3.0, 1.0], [1.5, -0.5], [2.5, -3.0], [0.0, -1.5], [-2.5, -3.0],
                 [-1.5, -0.5], [-3.0, 1.0], [-1.0, 1.0]])  # concave


def polygon_ref(x: np.ndarray, y: np.ndarray, poly: np.ndarray) -> np.ndarray:
    """Even-odd crossing test in NumPy, edge (i, i − 1) as the kernel walks them."""
    inside = np.zeros(len(x), bool)
    for i in range(len(poly)):
        (xi, yi), (xj, yj) = poly[i], poly[i - 1]
        with np.errstate(divide="ignore", invalid="ignore"):
            cross = ((yi > y) != (yj > y)) & (x < xi + (y - yi) * (xj - xi) / (yj - yi))
        inside ^= cross
    return inside


def cloud(n: int = 20_000, dtype=np.float64) -> np.ndarray:
    p = RNG.uniform(-4, 4, (n, 3)).astype(dtype)
    p[::97] = np.nan
    return p


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_prism_is_the_polygon_and_the_z_range(dtype):
    p = cloud(dtype=dtype)
    got = select_prism(p, STAR, -1.0, 2.0)
    q = p.astype(np.float64)
    want = polygon_ref(q[:, 0], q[:, 1], STAR) & (q[:, 2] >= -1.0) & (q[:, 2] <= 2.0)
    np.testing.assert_array_equal(got, want)
    assert 1000 < got.sum() < len(p) and not got[::97].any()


def test_box_and_sphere_match_numpy():
    p = cloud()
    q = np.array([np.cos(0.35), 0.0, 0.0, np.sin(0.35)])  # yaw 0.7 rad
    center, size = np.array([0.5, -0.2, 0.3]), np.array([3.0, 1.5, 2.0])
    want = naive.points_in_box(np.nan_to_num(p, nan=1e9), center, size, q)
    np.testing.assert_array_equal(select_box(p, center, size, q), want)
    d2 = ((p - [1.0, 1.0, 0.0]) ** 2).sum(axis=1)
    np.testing.assert_array_equal(select_sphere(p, [1.0, 1.0, 0.0], 2.5), d2 <= 2.5**2)
    assert select_sphere(p[:0], [0, 0, 0], 1.0).shape == (0,)


def test_selections_on_a_map_cloud_use_its_key_order_and_agree():
    p = np.vstack([RNG.uniform([-40, -30, -2], [60, 50, 8], (60_000, 3)), [[-9e4, 9e4, 0.0], [9e4, -9e4, 1.0]]])
    cl = map_cloud([p], 0.1)
    poly = STAR * 6 + [10, 5]
    q = np.array([np.cos(0.3), 0.0, 0.0, np.sin(0.3)])
    for got, want in [(select_prism(cl, poly, -1, 5), select_prism(cl.centroids, poly, -1, 5)),
                      (select_box(cl, [5, 5, 1], [20, 8, 4], q), select_box(cl.centroids, [5, 5, 1], [20, 8, 4], q)),
                      (select_sphere(cl, [-9e4, 9e4, 0], 3), select_sphere(cl.centroids, [-9e4, 9e4, 0], 3)),
                      (select_prism(cl, poly + 1e5, -1, 5), np.zeros(len(cl), bool))]:
        np.testing.assert_array_equal(got, want)
    assert select_prism(cl, poly, -1, 5).sum() > 1000


def test_bad_selections_name_the_argument():
    p = cloud(10)
    with pytest.raises(ValueError, match="polygon must have shape"):
        select_prism(p, STAR[:2], 0, 1)
    with pytest.raises(ValueError, match="polygon contains NaN"):
        select_prism(p, np.vstack([STAR, [np.nan, 0]]), 0, 1)
    with pytest.raises(ValueError, match="z range"):
        select_prism(p, STAR, np.nan, 1)
    with pytest.raises(ValueError, match="z_min must not exceed"):
        select_prism(p, STAR, 2, 1)
    with pytest.raises(ValueError, match="center"):
        select_sphere(p, [0, np.inf, 0], 1)
    with pytest.raises(ValueError, match="radius must be non-negative"):
        select_sphere(p, [0, 0, 0], -1)
    with pytest.raises(ValueError, match="size must be non-negative"):
        select_box(p, [0, 0, 0], [1, -1, 1], [1, 0, 0, 0])


def test_apply_labels_with_filters_and_groups():
    cls = np.array([0, 0, 3, 3, 5, 0], np.uint16)
    inst = np.zeros(6, np.uint32)
    sel = np.array([True, False, True, True, True, True])
    assert apply_labels(cls, inst, sel, 7, 9, only_unlabelled=True) == 2
    np.testing.assert_array_equal(cls, [7, 0, 3, 3, 5, 7])
    assert apply_labels(cls, inst, sel, 8, 1, only_class=3) == 2
    np.testing.assert_array_equal(cls, [7, 0, 8, 8, 5, 7])
    np.testing.assert_array_equal(inst, [9, 0, 1, 1, 0, 9])
    group = np.array([1, -1, 0, -1, 1, -1], np.int32)
    assert apply_labels(cls, inst, group, np.array([2, 4]), np.array([20, 40])) == 3
    np.testing.assert_array_equal(cls, [4, 0, 2, 8, 4, 7])
    np.testing.assert_array_equal(inst, [40, 0, 20, 1, 40, 9])
    with pytest.raises(ValueError, match="group ids must be below"):
        apply_labels(cls, inst, group, np.array([2]), np.array([20]))
    with pytest.raises(ValueError, match="uint16"):
        apply_labels(cls.astype(np.int64), inst, sel, 1, 1)


def test_voxel_keys_and_the_map_cloud():
    p = RNG.uniform(-30, 30, (30_000, 3))
    keys = voxel_keys(p, 0.25)
    idx = np.floor(p * (1 / 0.25)).astype(np.int64)
    np.testing.assert_array_equal(np.floor(key_centers(keys, 0.25) * 4).astype(np.int64), idx)
    assert voxel_keys(np.array([[np.nan, 0, 0], [3e5, 0, 0]]), 0.1).tolist() == [-1, -1]
    shifted = p + 0.01
    cl = map_cloud([p, shifted], 0.25)
    both = np.vstack([p, shifted])
    uniq, inv = np.unique(np.floor(both * 4).astype(np.int64), axis=0, return_inverse=True)
    assert len(cl) == len(uniq) and cl.counts.sum() == len(both)
    row = np.searchsorted(cl.keys, voxel_keys(both, 0.25))
    sums = np.zeros((len(cl), 3))
    np.add.at(sums, row, both)
    np.testing.assert_allclose(cl.centroids, sums / cl.counts[:, None], rtol=0, atol=1e-9)


def test_transfer_takes_frame_then_box_then_voxel():
    p = RNG.uniform(-10, 10, (50_000, 3))
    cl = map_cloud([p], 0.2)
    mc = RNG.integers(0, 9, len(cl)).astype(np.uint16)
    mi = RNG.integers(0, 4, len(cl)).astype(np.uint32)
    labelled = (mc != 0) | (mi != 0)
    vl = voxel_labels(cl.keys[labelled], mc[labelled], mi[labelled], 0.2)
    box = RNG.integers(-1, 3, len(p)).astype(np.int32)
    bc, bi = np.array([4, INHERIT, 6], np.uint16), np.array([11, 12, 13], np.uint32)
    fc = np.where(RNG.random(len(p)) < 0.1, 2, INHERIT).astype(np.uint16)
    fi = np.full(len(p), 77, np.uint32)
    got_c, got_i = transfer_labels(p, vl, box, bc, bi, fc, fi)
    row = np.searchsorted(cl.keys, voxel_keys(p, 0.2))
    want_c, want_i = mc[row].copy(), mi[row].copy()
    in_box = (box >= 0) & (bc[np.maximum(box, 0)] != INHERIT)
    want_c[in_box], want_i[in_box] = bc[box[in_box]], bi[box[in_box]]
    own = fc != INHERIT
    want_c[own], want_i[own] = fc[own], fi[own]
    np.testing.assert_array_equal(got_c, want_c)
    np.testing.assert_array_equal(got_i, want_i)
    c0, i0 = transfer_labels(p + 100.0, vl)  # outside the map: unlabelled
    assert not c0.any() and not i0.any()


def test_voxel_labels_find_every_place_of_a_brick():
    """Bricks with all 64 places (the sign bit of the occupancy mask included), with one,
    sparse ones, and enough bricks that home slots collide; keys next to labelled ones
    (same brick, other brick) are unlabelled."""
    full = voxel_keys(np.stack(np.meshgrid(*[np.arange(4) * 0.1 + 0.05] * 3), -1).reshape(-1, 3), 0.1)
    corner = voxel_keys(np.array([[0.35, 0.75, -0.05]]), 0.1)
    sparse = voxel_keys(RNG.uniform(-50, 50, (40_000, 3)), 0.1)
    keys = np.unique(np.concatenate([full, corner, sparse]))
    cls = RNG.integers(1, 65_535, len(keys)).astype(np.uint16)
    inst = RNG.integers(0, 1 << 32, len(keys), dtype=np.uint64).astype(np.uint32)
    vl = voxel_labels(keys, cls, inst, 0.1)
    probe = np.concatenate([keys, keys + 1, keys - (1 << 21), voxel_keys(RNG.uniform(-60, 60, (20_000, 3)), 0.1), [-1]])
    row = np.minimum(np.searchsorted(keys, probe), len(keys) - 1)
    hit = keys[row] == probe
    got_c, got_i = vl.lookup(probe)
    np.testing.assert_array_equal(got_c, np.where(hit, cls[row], 0))
    np.testing.assert_array_equal(got_i, np.where(hit, inst[row], 0))
    assert hit.sum() > len(keys) and (~hit).sum() > 10_000
    empty = voxel_labels(keys[:0], cls[:0], inst[:0], 0.1)
    assert not empty.lookup(probe)[0].any()


def _polygons(n: int, rng: np.random.Generator, scale: float) -> list[np.ndarray]:
    """Star-shaped, self-intersecting and grid-aligned polygons (vertical and horizontal edges)."""
    out = []
    for k in range(n):
        m = int(rng.integers(3, 14))
        ang = np.sort(rng.uniform(0, 2 * np.pi, m))
        poly = scale * np.column_stack([np.cos(ang), np.sin(ang)]) * rng.uniform(0.2, 1.0, (m, 1))
        if k % 3 == 1:
            poly = rng.uniform(-scale, scale, (m, 2))
        if k % 3 == 2:
            poly = np.round(poly / (0.1 * scale)) * (0.1 * scale)
        out.append(poly)
    return out


def test_polygon_tests_are_the_crossing_test_bit_for_bit():
    """Points on vertices, on edges and within 1e-12 of them, where rounding decides."""
    for poly in _polygons(30, RNG, 40.0):
        t = RNG.random((4000, 1))
        j = RNG.integers(0, len(poly), 4000)
        on_edges = poly[j] + t * (poly[j - 1] - poly[j])
        pts = np.vstack([RNG.uniform(-45, 45, (8000, 2)), poly, on_edges,
                         on_edges + RNG.normal(0, 1e-12, on_edges.shape)])
        want = polygon_ref(pts[:, 0], pts[:, 1], poly)
        np.testing.assert_array_equal(select_polygon_2d(pts, np.ones(len(pts), bool), poly), want)
        z = RNG.uniform(-1, 1, len(pts))
        np.testing.assert_array_equal(select_prism(np.column_stack([pts, z]), poly, -0.5, 0.5),
                                      want & (np.abs(z) <= 0.5))


def test_prism_on_a_map_cloud_is_the_crossing_test_bit_for_bit():
    p = RNG.uniform([-40, -40, -3], [40, 40, 3], (200_000, 3))
    cl = map_cloud([p], 0.1)
    x, y, z = cl.centroids.T
    for k, poly in enumerate(_polygons(24, RNG, 35.0)):
        z0, z1 = np.sort(RNG.uniform(-3.5, 3.5, 2))
        if k % 2:
            z0, z1 = np.round(z0, 1), np.round(z1, 1)  # z bounds on voxel boundaries
        want = polygon_ref(x, y, poly) & (z >= z0) & (z <= z1)
        np.testing.assert_array_equal(select_prism(cl, poly, z0, z1), want)


def test_lasso_matches_numpy_projection_and_zbuffer(drive):
    cam = drive.camera("CAM_FRONT")
    assert cam.intrinsics.model == "pinhole" and cam.shutter == "global"
    track: PoseTrack = drive.world_from_ego
    t_cam = int(drive.frame_times_ns[3]) + 20_000_000
    p = RNG.uniform([-5, -30, -2], [60, 30, 6], (40_000, 3))
    # a wall at 12 m in front of the ego hides what lies behind it in the image
    ego = track.at(t_cam)
    wall = ego.apply(np.column_stack([np.full(3000, 12.0), RNG.uniform(-3, 3, 3000), RNG.uniform(-1, 2, 3000)]))
    p = np.vstack([p, wall])
    w, h = cam.intrinsics.width, cam.intrinsics.height
    poly = np.array([[10.0, 5.0], [w - 20.0, 15.0], [w * 0.6, h - 8.0], [w * 0.3, h * 0.5], [15.0, h - 3.0]])
    got = select_lasso(p, cam, track, t_cam, poly)
    cam_from_world = (ego @ cam.ego_from_camera).inverse()
    pc = cam_from_world.apply(p)
    front = pc[:, 2] > cam.near_m
    with np.errstate(divide="ignore", invalid="ignore"):
        uv = naive.brown_conrady(pc[:, 0] / pc[:, 2], pc[:, 1] / pc[:, 2], cam.intrinsics)
    inside = front & naive.in_image(uv, w, h)
    _, visible = naive.zbuffer(uv, pc[:, 2].astype(np.float32), inside, w, h, 2, 0.1, 0.02)
    want = visible & polygon_ref(uv[:, 0], uv[:, 1], poly)
    np.testing.assert_array_equal(got, want)
    assert want.sum() > 500 and (inside & polygon_ref(uv[:, 0], uv[:, 1], poly) & ~visible).sum() > 100
    with pytest.raises(ValueError, match="polygon"):
        select_lasso(p, cam, track, t_cam, poly[:2])
    np.testing.assert_array_equal(select_polygon_2d(uv, inside, poly), inside & polygon_ref(uv[:, 0], uv[:, 1], poly))
    # small lassos project and z-buffer only the points near them: their occluders just
    # outside the polygon still hide what they hide in the whole image
    hidden = 0
    for _ in range(40):
        tri = RNG.uniform([0, 0], [w, h]) + RNG.uniform(-25, 25, (3, 2))
        in_tri = polygon_ref(uv[:, 0], uv[:, 1], tri)
        np.testing.assert_array_equal(select_lasso(p, cam, track, t_cam, tri), visible & in_tri)
        hidden += (inside & in_tri & ~visible).sum()
    assert hidden > 20


# ---------------------------------------------------------------- encoding


def test_labels_round_trip_and_are_compact():
    cls = np.repeat(RNG.integers(0, 30, 3000), RNG.integers(1, 120, 3000)).astype(np.uint16)
    inst = (cls.astype(np.uint32) * 1000 + RNG.integers(0, 2, len(cls)).astype(np.uint32) * (cls > 20))
    data = encode_labels(cls, inst)
    c, i = decode_labels(data, n_points=len(cls))
    np.testing.assert_array_equal(c, cls)
    np.testing.assert_array_equal(i, inst)
    assert len(data) < len(cls)  # under a byte a point for run-structured labels
    for n in (0, 1):
        c, i = decode_labels(encode_labels(cls[:n], inst[:n]))
        assert len(c) == n and c.dtype == np.uint16 and i.dtype == np.uint32
    raw = encode_labels(cls, inst, level=0)
    np.testing.assert_array_equal(decode_labels(raw)[0], cls)


def test_map_labels_round_trip():
    keys = np.sort(RNG.choice(1 << 62, 4000, replace=False)).astype(np.int64)
    cls = RNG.integers(0, 5, 4000).astype(np.uint16)
    inst = RNG.integers(0, 1 << 32, 4000, dtype=np.uint64).astype(np.uint32)
    k, c, i = decode_map(encode_map(keys, cls, inst))
    np.testing.assert_array_equal(k, keys)
    np.testing.assert_array_equal(c, cls)
    np.testing.assert_array_equal(i, inst)
    with pytest.raises(ValueError, match="strictly increasing"):
        encode_map(keys[::-1], cls, inst)


def test_damaged_label_bytes_raise_format_errors():
    cls = np.repeat(np.arange(50, dtype=np.uint16), 40)
    data = encode_labels(cls, cls.astype(np.uint32))
    with pytest.raises(FormatError, match="24-byte segmentation header"):
        decode_labels(data[:10])
    with pytest.raises(FormatError, match="magic"):
        decode_labels(b"XSEG" + data[4:])
    with pytest.raises(FormatError, match="payload bytes"):
        decode_labels(data[:-1])
    with pytest.raises(FormatError, match="labels for the frame's 7 points"):
        decode_labels(data, n_points=7)
    bad = bytearray(data)
    bad[-5] ^= 0xFF
    with pytest.raises(FormatError, match="zlib"):
        decode_labels(bytes(bad))
    huge = bytearray(data)
    huge[8:12] = (1 << 31).to_bytes(4, "little")  # a count no payload of this size can hold
    with pytest.raises(FormatError):
        decode_labels(bytes(huge))
    raw = bytearray(encode_labels(cls, cls.astype(np.uint32), level=0))
    raw[-1] = 200  # a run's pair index beyond the pairs
    with pytest.raises(FormatError, match="pair indices below"):
        decode_labels(bytes(raw))
    with pytest.raises(FormatError, match="map header"):
        decode_map(b"FSMP")


def test_class_list_checks_name_the_entry():
    ok = classes_from_json([{"id": 3, "name": "car", "color": [1, 2, 3]}, {"id": 0, "name": "none"}])
    assert [c.id for c in ok] == [0, 3] and ok[1].color == (1, 2, 3)
    for doc, msg in [([{"id": 1, "name": "a"}], "class id 0"),
                     ([{"id": 0, "name": "a"}, {"id": 0, "name": "b"}], r"\[1\]\.id"),
                     ([{"id": 0, "name": "a"}, {"id": 1, "name": "a"}], r"\[1\]\.name"),
                     ([{"id": 0, "name": "a", "color": [1, 2]}], r"\[0\]\.color"),
                     ([{"id": 65535, "name": "a"}], r"\[0\]\.id")]:
        with pytest.raises(ValueError, match=msg):
            classes_from_json(doc)


def test_select_box_accepts_a_rotation_of_any_norm():
    p = cloud(2000)
    q = np.array([2.0, 0, 0, 0.4])
    np.testing.assert_array_equal(select_box(p, [0, 0, 0], [2, 3, 4], q),
                                  select_box(p, [0, 0, 0], [2, 3, 4], q / np.linalg.norm(q)))
