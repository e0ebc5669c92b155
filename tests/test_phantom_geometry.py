"""The phantom generator's fast paths give what the plain computation gives: `field` in slabs, `tube_distance`
with a reach, `organ_box` around an ellipsoid. Whole phantoms are pinned bit for bit in tests/test_phantoms.py;
these check the pieces on inputs the pinned seeds may not reach (views, broadcasting, rotations, far points)."""

import numpy as np
import pytest
from scipy.spatial import cKDTree

from panther_ensemble.io import Geometry
from panther_ensemble.phantoms import geometry as gm


def plain_field(wave_list, x, y, z):  # the definition, on the whole array at once
    f = np.zeros(np.broadcast_shapes(np.shape(x), np.shape(y), np.shape(z)))
    tot = 0.0
    for kv, ph, amp in wave_list:
        f += amp * np.cos(kv[0] * x + kv[1] * y + kv[2] * z + ph)
        tot += amp * amp
    return f / np.sqrt(tot / 2.0)


@pytest.mark.parametrize("shape", [(37, 61, 83), (3, 300, 310), (1, 5, 7), (200,)])
def test_field_in_slabs_is_the_plain_field_bit_for_bit(shape):
    rng = np.random.default_rng(1)
    waves = gm.waves(rng, 6, 9, 60)
    big = [rng.uniform(-300, 300, size=tuple(n + 4 for n in shape)) for _ in range(3)]
    views = [b[tuple(slice(2, 2 + n) for n in shape)] for b in big]  # non-contiguous, as Grid.sub gives
    assert not views[0].flags.c_contiguous or len(shape) == 1
    got = gm.field(waves, *views)
    assert got.shape == shape and np.array_equal(got, plain_field(waves, *views))


def test_field_broadcasts_and_takes_scalars():
    rng = np.random.default_rng(2)
    waves = gm.waves(rng, 3, 20, 80)
    x = rng.uniform(-100, 100, size=(1, 1, 50))
    y = rng.uniform(-100, 100, size=(1, 40, 1))
    z = rng.uniform(-100, 100, size=(100, 1, 1))  # 100 x 40 x 50: several slabs
    assert np.array_equal(gm.field(waves, x, y, z), plain_field(waves, x, y, z))
    assert gm.field(waves, 1.0, 2.0, 3.0) == plain_field(waves, 1.0, 2.0, 3.0)


def test_field_bound_is_never_exceeded_and_is_tight():
    rng = np.random.default_rng(3)
    for n in (1, 3, 6, 10):
        waves = gm.waves(rng, n, 10, 50)
        bound = gm.field_bound(waves)
        # all waves in phase: the bound is reached
        aligned = [(kv, 0.0, amp) for kv, _, amp in waves]
        assert gm.field(aligned, 0.0, 0.0, 0.0) == pytest.approx(bound)
        pts = rng.uniform(-500, 500, size=(3, 100000))
        assert np.abs(gm.field(waves, *pts)).max() <= bound + 1e-12


def test_tube_distance_within_reach_is_exact():
    rng = np.random.default_rng(4)
    curve = gm.spline(rng.uniform(-40, 40, size=(6, 3)), 240)
    x, y, z = (rng.uniform(-80, 80, size=(20, 30, 40)) for _ in range(3))
    full_d, full_i = gm.tube_distance(x, y, z, curve)
    d, i = gm.tube_distance(x, y, z, curve, within=12.0)
    near = full_d < 12.0
    assert 0 < near.sum() < near.size
    assert np.array_equal(d[near], full_d[near]) and np.array_equal(i[near], full_i[near])
    assert np.isinf(d[~near]).all() and (i[~near] == len(curve) - 1).all()
    assert np.array_equal(full_d, cKDTree(curve).query(np.stack([x.ravel(), y.ravel(), z.ravel()], 1))[0].reshape(x.shape))


@pytest.mark.parametrize("direction", [np.eye(3), np.diag([-1.0, 1.0, 1.0]),
                                       np.array([[0.94, -0.342, 0], [0.342, 0.94, 0], [0, 0, 1.0]])])
def test_organ_box_holds_the_whole_ellipsoid_for_any_rotation(direction):
    d = np.linalg.qr(direction)[0] * np.sign(np.diag(np.linalg.qr(direction)[1]))  # orthonormal, same signs
    geom = Geometry((120, 100, 40), (2.0, 2.0, 4.0), (-120.0, -100.0, -80.0), tuple(float(v) for v in d.ravel()))
    grid = gm.Grid(geom, np.array([0.0, 0.0, 0.0]))
    rng = np.random.default_rng(5)
    for _ in range(20):
        c = rng.uniform(-60, 60, size=3)
        ax = rng.uniform(5, 50, size=3)
        rot = rng.uniform(-np.pi, np.pi)
        level = rng.uniform(1.0, 1.3)
        inside = gm.ellipsoid(grid.x, grid.y, grid.z, c, ax, rot) < level
        sl = gm.organ_box(grid, c, ax, level)
        boxed = np.zeros(grid.shape, bool)
        boxed[sl] = True
        assert not (inside & ~boxed).any()
        assert boxed.sum() < boxed.size or inside.sum() > 0.2 * boxed.size  # a box, not the whole grid


def test_a_forced_tumour_voxel_beyond_the_reach_gets_its_exact_centreline_point():
    """tumour_shape's fallback (a tumour lost to rounding) forces one voxel; if it lies beyond pancreas_shape's
    reach, its distance and position along the centreline are measured exactly (the tumour's intensity there
    follows the pancreas base at that position)."""
    from types import SimpleNamespace

    from panther_ensemble.phantoms.anatomy import Centreline, Gland, tumour_shape

    curve = gm.spline(np.array([[-30.0, 0, 0], [0, 5, 0], [30, 0, 5]]), 120)
    t = np.linspace(0, 1, len(curve))
    centre = Centreline(curve, t, np.full(len(curve), 0.01), (slice(None),) * 3)  # a hair-thin gland: nothing grows
    xs = np.meshgrid(np.linspace(-40, 40, 9), np.linspace(-20, 20, 5), np.linspace(-10, 10, 3), indexing="ij")
    coords = tuple(v.transpose(2, 1, 0).copy() for v in xs)  # (z, y, x)
    far = np.full(coords[0].shape, np.inf)  # every voxel beyond the reach, as tube_distance(within=) leaves it
    gland = Gland(coords, far.copy(), np.full(far.shape, 0.01), np.full(far.shape, 0.5), np.zeros(far.shape, bool))
    tum = tumour_shape(SimpleNamespace(rng=np.random.default_rng(0)), centre, gland)
    forced = np.argwhere(tum.mask)
    assert len(forced) == 1  # the fallback ran
    k = tuple(forced[0])
    exact_d, exact_i = cKDTree(curve).query([[coords[0][k], coords[1][k], coords[2][k]]])
    assert gland.dist[k] == exact_d[0] and gland.t[k] == t[exact_i[0]]
    assert np.isinf(np.delete(gland.dist.ravel(), np.ravel_multi_index(k, far.shape))).all()  # the rest untouched
