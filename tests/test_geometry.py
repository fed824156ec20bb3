"""Quaternions and SE3 against scipy's Rotation and hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from engine import SE3
from engine import quaternion as quat

RNG = np.random.default_rng(1234)


def random_quats(n: int, seed: int = 0) -> np.ndarray:
    return Rotation.random(n, random_state=seed).as_quat(scalar_first=True)


def test_multiply_matches_scipy_composition():
    a, b = random_quats(100, 1), random_quats(100, 2)
    ours = quat.multiply(a, b)
    ref = (Rotation.from_quat(a, scalar_first=True) * Rotation.from_quat(b, scalar_first=True)).as_quat(
        scalar_first=True
    )
    np.testing.assert_allclose(quat.angle_between(ours, ref), 0.0, atol=1e-7)


def test_row_kernels_broadcast_and_give_the_numpy_formulas_bits():
    """multiply, rotate_broadcast, to_matrix and as_quaternions against the same formulas in
    NumPy, over broadcast batch shapes (single rows, (5, 1) × (3,), empty)."""
    rng = np.random.default_rng(7)
    a = rng.normal(size=(5, 1, 4)) * rng.uniform(0.1, 10, (5, 1, 1))
    b = rng.normal(size=(3, 4))
    v = rng.normal(size=(3, 3))
    np.testing.assert_array_equal(quat.as_quaternions(a), a / np.linalg.norm(a, axis=-1, keepdims=True))
    a, b = quat.as_quaternions(a), quat.as_quaternions(b)
    aw, ax, ay, az = np.moveaxis(a, -1, 0)
    bw, bx, by, bz = np.moveaxis(b, -1, 0)
    want = np.stack([aw * bw - ax * bx - ay * by - az * bz, aw * bx + ax * bw + ay * bz - az * by,
                     aw * by - ax * bz + ay * bw + az * bx, aw * bz + ax * by - ay * bx + az * bw], axis=-1)
    np.testing.assert_array_equal(quat.multiply(a, b), want)
    t = 2.0 * np.cross(a[..., 1:], v)
    np.testing.assert_array_equal(quat.rotate_broadcast(a, v), v + a[..., :1] * t + np.cross(a[..., 1:], t))
    np.testing.assert_allclose(quat.to_matrix(b) @ v[0], Rotation.from_quat(b, scalar_first=True).apply(v[0]),
                               atol=1e-12)
    assert quat.multiply(b[0], b[1]).shape == (4,) and quat.rotate_broadcast(b[0], v).shape == (3, 3)
    assert quat.multiply(np.zeros((0, 4)), b[0]).shape == (0, 4)
    with pytest.raises(ValueError, match="NaN"):
        quat.as_quaternions(np.array([[1.0, 0, 0, 0], [0.0, 0, 0, np.inf]]))


def test_hand_computed_rotation_about_z():
    q = quat.from_yaw(math.pi / 2)
    np.testing.assert_allclose(q, [math.sqrt(0.5), 0, 0, math.sqrt(0.5)], atol=1e-15)
    np.testing.assert_allclose(quat.rotate(q, np.array([[1.0, 0, 0]])), [[0, 1, 0]], atol=1e-15)
    np.testing.assert_allclose(quat.to_matrix(q), [[0, -1, 0], [1, 0, 0], [0, 0, 1]], atol=1e-15)


def test_rotate_and_matrix_match_scipy():
    q = random_quats(500, 3)
    p = RNG.normal(size=(500, 3))
    r = Rotation.from_quat(q, scalar_first=True)
    np.testing.assert_allclose(quat.rotate(q, p), r.apply(p), atol=1e-12)
    np.testing.assert_allclose(quat.to_matrix(q), r.as_matrix(), atol=1e-12)
    one = quat.rotate(q[0], p)
    np.testing.assert_allclose(one, r[0].apply(p), atol=1e-12)


def test_from_matrix_round_trip_including_180_degree_rotations():
    q = np.concatenate([random_quats(300, 4), [[0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1], [0, 0.6, 0.8, 0]]])
    back = quat.from_matrix(quat.to_matrix(q))
    np.testing.assert_allclose(quat.angle_between(back, q), 0.0, atol=1e-7)
    assert np.all(back[:, 0] >= 0)


def test_euler_zyx_matches_scipy_intrinsic_ZYX():
    rpy = RNG.uniform([-math.pi, -1.5, -math.pi], [math.pi, 1.5, math.pi], (200, 3))
    q = quat.from_euler_zyx(rpy[:, 0], rpy[:, 1], rpy[:, 2])
    ref = Rotation.from_euler("ZYX", rpy[:, ::-1]).as_quat(scalar_first=True)
    np.testing.assert_allclose(quat.angle_between(q, ref), 0.0, atol=1e-7)
    np.testing.assert_allclose(quat.to_euler_zyx(q), rpy, atol=1e-9)


def test_slerp_matches_scipy_and_takes_the_shortest_arc():
    from scipy.spatial.transform import Slerp

    a, b = random_quats(50, 5), random_quats(50, 6)
    u = RNG.uniform(0, 1, 50)
    ours = quat.slerp(a, b, u)
    for i in range(50):
        ref = Slerp([0, 1], Rotation.from_quat([a[i], b[i]], scalar_first=True))([u[i]])
        assert quat.angle_between(ours[i], ref.as_quat(scalar_first=True)[0]) < 1e-7
    # -b is the same rotation as b: the result must not depend on the sign
    np.testing.assert_allclose(quat.angle_between(quat.slerp(a, -b, u), ours), 0.0, atol=1e-7)
    # yaw 170° → -170° passes through 180°, not 0°
    mid = quat.slerp(quat.from_yaw(np.radians(170)), quat.from_yaw(np.radians(-170)), 0.5)
    assert abs(abs(quat.to_euler_zyx(mid)[2]) - math.pi) < 1e-9


def test_slerp_of_identical_and_nearly_identical_quaternions_is_finite_and_unit():
    q = random_quats(1, 7)[0]
    out = quat.slerp(q, q, np.linspace(0, 1, 5))
    np.testing.assert_allclose(out, np.tile(q, (5, 1)), atol=1e-15)
    tiny = quat.multiply(q, quat.from_yaw(1e-9))
    out = quat.slerp(q, tiny, np.array([0.5]))
    assert np.all(np.isfinite(out)) and abs(np.linalg.norm(out) - 1) < 1e-15


@pytest.mark.parametrize(
    "bad, match",
    [
        (np.zeros(4), "zero-norm"),
        (np.array([np.nan, 0, 0, 1.0]), "NaN"),
        (np.ones(3), r"\(\.\.\., 4\)"),
    ],
)
def test_bad_quaternions_raise(bad, match):
    with pytest.raises(ValueError, match=match):
        quat.as_quaternions(bad)


def test_non_unit_quaternions_are_normalised_or_rejected():
    q = np.array([2.0, 0, 0, 0])
    np.testing.assert_allclose(quat.as_quaternions(q), [1, 0, 0, 0])
    with pytest.raises(ValueError, match="unit"):
        quat.as_quaternions(q, normalize=False)
    assert SE3(q, np.zeros(3)).rotation[0] == 1.0


def random_se3(n: int | None, seed: int) -> SE3:
    rng = np.random.default_rng(seed)
    shape = () if n is None else (n,)
    q = Rotation.random(1 if n is None else n, random_state=seed).as_quat(scalar_first=True).reshape(shape + (4,))
    return SE3(q, rng.normal(0, 10, shape + (3,)))


def test_se3_apply_matches_homogeneous_matrices():
    t = random_se3(None, 1)
    p = RNG.normal(size=(1000, 3))
    m = t.as_matrix()
    np.testing.assert_allclose(t.apply(p), p @ m[:3, :3].T + m[:3, 3], atol=1e-12)
    batch = random_se3(1000, 2)
    mb = batch.as_matrix()
    np.testing.assert_allclose(batch.apply(p), np.einsum("nij,nj->ni", mb[:, :3, :3], p) + mb[:, :3, 3], atol=1e-12)


def test_se3_compose_and_inverse_match_matrices_and_round_trip():
    a, b = random_se3(200, 3), random_se3(200, 4)
    np.testing.assert_allclose((a @ b).as_matrix(), a.as_matrix() @ b.as_matrix(), atol=1e-11)
    np.testing.assert_allclose(a.inverse().as_matrix(), np.linalg.inv(a.as_matrix()), atol=1e-11)
    assert (a @ a.inverse()).allclose(SE3.identity(200), atol=1e-12)
    assert (a.inverse() @ a).allclose(SE3.identity(200), atol=1e-12)
    # broadcasting a single transform over a batch
    single = random_se3(None, 5)
    np.testing.assert_allclose((single @ b).as_matrix(), single.as_matrix() @ b.as_matrix(), atol=1e-11)
    assert SE3.from_matrix(a.as_matrix()).allclose(a, atol=1e-12)


def test_se3_named_composition_reads_right_to_left():
    world_from_ego = SE3(quat.from_yaw(math.pi / 2), [10.0, 0, 0])
    ego_from_lidar = SE3([1.0, 0, 0, 0], [1.0, 0, 2.0])
    world_from_lidar = world_from_ego @ ego_from_lidar
    # lidar origin sits 1 m ahead of the ego; the ego faces +y (north) at x=10
    np.testing.assert_allclose(world_from_lidar.apply(np.zeros((1, 3))), [[10.0, 1.0, 2.0]], atol=1e-12)


def test_se3_empty_points_and_bad_input():
    t = random_se3(None, 6)
    assert t.apply(np.zeros((0, 3))).shape == (0, 3)
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        t.apply(np.zeros((4, 2)))
    with pytest.raises(ValueError, match="NaN"):
        SE3([1.0, 0, 0, 0], [np.nan, 0, 0])
    with pytest.raises(ValueError, match="batch shapes"):
        SE3(np.tile([1.0, 0, 0, 0], (3, 1)), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="cannot apply"):
        random_se3(3, 7).apply(np.zeros((5, 3)))
