"""Where a phantom's voxels are: a random voxel grid over the patient frame, and shapes in millimetres.

The anatomy is drawn in a patient frame (LPS millimetres: +x patient left, +y posterior, +z superior)
centred on the anatomical centre.  `random_geometry` places a voxel grid (`io.Geometry`: size, spacing,
origin and direction as a scanner would store them) over that frame; `Grid` gives every voxel's
patient-frame coordinates, so shapes do not depend on the spacing and the array content honours the
direction.  The helpers below draw smooth random fields, ellipsoids and tubes in those millimetres.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from ..io import Geometry


def random_direction(rng: np.random.Generator) -> np.ndarray:
    """Identity for 3 phantoms in 4; otherwise an axis flip or an oblique rotation (half each)."""
    if rng.random() >= 0.25:
        return np.eye(3)
    if rng.random() < 0.5:  # axis flip (x or y), like a scan stored in a different orientation
        d = np.eye(3)
        d[int(rng.integers(0, 2))] *= -1.0
        return d
    # oblique acquisition: rotation about z (up to 20 deg) then about x (up to 10 deg)
    a = np.deg2rad(rng.uniform(-20, 20))
    b = np.deg2rad(rng.uniform(-10, 10))
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1.0]])
    rx = np.array([[1.0, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    return rz @ rx


def random_geometry(task: int, rng: np.random.Generator) -> tuple[Geometry, np.ndarray]:
    """The voxel grid of one phantom and the world position (mm) of its anatomical centre.

    Task 1: 3.0-3.5 mm slices, about 1.2 mm in-plane, 62-83 slices over a 345-430 mm field of view
    (like PANTHER's T1 arterial scans).  Task 2: about 2 x 0.95 x 0.95 mm, 70-100 slices of 250-320
    voxels (like the MR-Linac T2 scans).
    """
    if task == 1:
        sz = 3.0 if rng.random() < 0.6 else float(np.round(rng.uniform(3.0, 3.5), 2))
        sxy = float(np.round(np.clip(rng.normal(1.17, 0.09), 0.69, 1.31), 4))
        fov_x = rng.uniform(345.0, 430.0)
        fov_y = fov_x * rng.uniform(0.76, 0.86)
        nz = int(rng.integers(62, 84))
        nx = min(int(round(fov_x / sxy)), 570)
        ny = min(int(round(fov_y / sxy)), 466)
    elif task == 2:
        sz = float(np.round(rng.uniform(1.9, 2.1), 2))
        sxy = float(np.round(rng.uniform(0.89, 1.0), 4))
        nz = int(rng.integers(70, 101))
        nx = int(rng.integers(250, 321))
        ny = int(rng.integers(250, min(nx, 320) + 1))
    else:
        raise ValueError(f"task must be 1 or 2, got {task!r}")
    d = random_direction(rng)
    spacing_xyz = np.array([sxy, sxy, sz])
    size_xyz = np.array([nx, ny, nz])
    centre_world = np.array([rng.uniform(-40, 40), rng.uniform(-60, 40), rng.uniform(-400, 150)])
    # where the field of view is centred relative to the anatomy (patient frame)
    fov_offset = np.array([rng.uniform(-12, 12), rng.uniform(0, 25), rng.uniform(-20, 20)])
    origin = centre_world + fov_offset - d @ ((size_xyz - 1) * spacing_xyz / 2.0)
    origin = np.round(origin, 3)
    geom = Geometry((nx, ny, nz), (sxy, sxy, sz), tuple(float(v) for v in origin),
                    tuple(float(v) for v in np.round(d, 12).ravel()))
    return geom, centre_world


class Grid:
    """Patient-frame millimetre coordinates (x, y, z arrays, float64, shape (z, y, x)) of every voxel."""

    def __init__(self, geom: Geometry, centre_world: np.ndarray):
        self.geom = geom
        nz, ny, nx = geom.shape_zyx
        sz, sy, sx = geom.spacing_zyx
        d = np.array(geom.direction).reshape(3, 3)
        a = d * np.array([sx, sy, sz])[None, :]  # world = origin + a @ (i, j, k)
        self.a = a
        self.c = np.array(geom.origin_xyz) - centre_world
        i = np.arange(nx, dtype=np.float64)
        j = np.arange(ny, dtype=np.float64)
        k = np.arange(nz, dtype=np.float64)
        self.shape = (nz, ny, nx)
        q = []
        for r in range(3):
            q.append(self.c[r] + a[r, 0] * i[None, None, :] + a[r, 1] * j[None, :, None] + a[r, 2] * k[:, None, None])
        self.x, self.y, self.z = q
        self.ainv = np.linalg.inv(a)

    def box(self, lo, hi, margin: float = 2.0) -> tuple[slice, slice, slice]:
        """Index slices (z, y, x) covering the patient-frame box [lo, hi] (mm)."""
        lo = np.asarray(lo, float) - margin
        hi = np.asarray(hi, float) + margin
        corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
        idx = (self.ainv @ (corners - self.c).T).T  # (i, j, k)
        mn = np.floor(idx.min(0)).astype(int)
        mx = np.ceil(idx.max(0)).astype(int) + 1
        nz, ny, nx = self.shape
        sl = []
        for ax, n in ((2, nz), (1, ny), (0, nx)):
            a0, a1 = max(mn[ax], 0), min(mx[ax], n)
            sl.append(slice(a0, max(a0, a1)))
        return tuple(sl)

    def sub(self, sl):
        """(x, y, z) coordinates of the voxels in the slices `sl`."""
        return self.x[sl], self.y[sl], self.z[sl]

    def sigma_vox(self, mm: float) -> tuple[float, float, float]:
        """A Gaussian sigma of `mm` millimetres in voxels along (z, y, x)."""
        return tuple(mm / s for s in self.geom.spacing_zyx)


# --------------------------------------------------------------------------------------------
# shapes and smooth random fields in millimetres


def waves(rng: np.random.Generator, n: int, wl_lo: float, wl_hi: float):
    """Random plane waves (direction, wavenumber, phase, amplitude) for smooth mm-based fields."""
    out = []
    for _ in range(n):
        v = rng.normal(size=3)
        v /= np.linalg.norm(v)
        k = 2 * np.pi / rng.uniform(wl_lo, wl_hi)
        out.append((v * k, rng.uniform(0, 2 * np.pi), rng.uniform(0.5, 1.0)))
    return out


def field(wave_list, x, y, z):
    """Sum of the plane waves at (x, y, z), scaled to a standard deviation of about 1.

    Computed in slabs along the first axis so that the temporaries stay in the CPU's cache: every element sees
    the same operations in the same order as on the whole array, so the values are the same bit for bit."""
    shape = np.broadcast_shapes(np.shape(x), np.shape(y), np.shape(z))
    f = np.zeros(shape)
    tot = 0.0
    for _, _, amp in wave_list:
        tot += amp * amp
    if len(shape) == 0 or shape[0] <= 1:
        slabs = [...]
    else:
        step = max(1, _SLAB_ELEMENTS // max(1, int(np.prod(shape[1:]))))
        slabs = [slice(i, i + step) for i in range(0, shape[0], step)]
    x, y, z = (np.broadcast_to(v, shape) for v in (x, y, z))
    for sl in slabs:
        fs, xs, ys, zs = f[sl], x[sl], y[sl], z[sl]
        for kv, ph, amp in wave_list:
            fs += amp * np.cos(kv[0] * xs + kv[1] * ys + kv[2] * zs + ph)
    return f / np.sqrt(tot / 2.0)


_SLAB_ELEMENTS = 1 << 16  # float64 temporaries of 512 KiB: within a core's L2


def field_bound(wave_list) -> float:
    """The largest |field(wave_list, ...)| anywhere: the amplitudes' sum over `field`'s normalisation."""
    amps = np.array([amp for _, _, amp in wave_list], dtype=np.float64)
    return float(amps.sum() / np.sqrt((amps * amps).sum() / 2.0))


def organ_box(grid: Grid, c, ax, level: float) -> tuple[slice, slice, slice]:
    """Voxel slices covering every point where `ellipsoid(x, y, z, c, ax, rot_z) < level`, for any rot_z: the
    rotation about z keeps x^2 + y^2, so the larger in-plane semi-axis bounds both x and y."""
    r = np.sqrt(level) * np.asarray(ax, dtype=np.float64)
    half = np.array([max(r[0], r[1]), max(r[0], r[1]), r[2]])
    return grid.box(np.asarray(c, dtype=np.float64) - half, np.asarray(c, dtype=np.float64) + half)


def ellipsoid(x, y, z, c, ax, rot_z: float = 0.0):
    """Squared normalised radius of an ellipsoid (centre c, semi-axes ax, rotated by rot_z about z)."""
    dx, dy, dz = x - c[0], y - c[1], z - c[2]
    if rot_z:
        ca, sa = np.cos(rot_z), np.sin(rot_z)
        dx, dy = ca * dx + sa * dy, -sa * dx + ca * dy
    return (dx / ax[0]) ** 2 + (dy / ax[1]) ** 2 + (dz / ax[2]) ** 2


def spline(points: np.ndarray, n: int) -> np.ndarray:
    """Catmull-Rom curve through control points, n samples."""
    p = np.vstack([2 * points[0] - points[1], points, 2 * points[-1] - points[-2]])
    segs = len(points) - 1
    t = np.linspace(0, segs, n)
    i = np.minimum(t.astype(int), segs - 1)
    u = (t - i)[:, None]
    p0, p1, p2, p3 = p[i], p[i + 1], p[i + 2], p[i + 3]
    return 0.5 * ((2 * p1) + (-p0 + p2) * u + (2 * p0 - 5 * p1 + 4 * p2 - p3) * u ** 2 + (-p0 + 3 * p1 - 3 * p2 + p3) * u ** 3)


def tube_distance(x, y, z, curve: np.ndarray, within: float | None = None):
    """Distance (mm) from each point to a sampled curve and the index of the nearest curve sample.

    within: only distances below it are needed; points farther get distance inf and index len(curve) - 1
    (a valid index whose value must not matter). The k-d tree then prunes the far points, and every point
    within keeps its exact distance and nearest sample."""
    pts = np.stack([x.ravel(), y.ravel(), z.ravel()], axis=1)
    if within is None:
        dist, idx = cKDTree(curve).query(pts)
    else:
        dist, idx = cKDTree(curve).query(pts, distance_upper_bound=float(within))
        idx = np.minimum(idx, len(curve) - 1)
    return dist.reshape(x.shape), idx.reshape(x.shape)
