"""Synthetic abdominal MRI phantoms that stand in for PANTHER data (no real scan can be shipped).

Each phantom is an abdomen built in physical millimetres in a patient frame (LPS: +x patient left,
+y posterior, +z superior): body outline with subcutaneous fat and muscle wall, liver, spleen, kidneys
(cortex and medulla), stomach, duodenum, bowel loops with texture, spine with spinal canal and
paraspinal muscles, aorta, inferior vena cava, portal/superior mesenteric and splenic veins, and a
pancreas shaped as a curved tube (head, neck, body, tail) with a main duct.  A tumour (label 1) is an
irregular, sometimes multi-lobed blob of 5-50 mm inside or at the edge of the pancreas (label 2),
with heterogeneous texture, a dilated duct upstream of it and sometimes hypo-intense upstream
parenchyma.  The patient frame is then imaged on a voxel grid with its own spacing, size, origin and
direction (1 in 4 phantoms have a rotated or flipped direction matrix), so shapes do not depend on the
spacing and the array content honours the direction.

Imaging: Task 1 looks like a fat-saturated T1 arterial-phase scan (bright aorta and renal cortex,
pancreas the brightest parenchyma, tumour hypo-intense with low contrast-to-noise); Task 2 like a
T2-weighted MR-Linac scan (bright fluid, dark vessels, tumour slightly hyper-intense, coarser and
noisier).  Then partial-volume blur, a smooth multiplicative bias field, a random intensity scale and
Rician noise; stored as int16 (>= 0) in compressed .mha.

Every phantom is a pure function of (task, seed): a numpy Generator seeded from [task, seed], float64
arithmetic throughout, so the same call gives bit-for-bit the same image, label and geometry.

Command line: ``panther-ensemble phantom {socket,dataset,baseline,info} ...``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

log = logging.getLogger(__name__)

HELP = "generate synthetic PANTHER-like MRI phantoms (socket cases, nnU-Net datasets) and run the threshold baseline"

SLUGS = {1: "abdominal-t1-mri", 2: "abdominal-t2-mri"}
LABELS = {"background": 0, "tumor": 1, "pancreas": 2}

# --------------------------------------------------------------------------------------------
# geometry


@dataclass(frozen=True)
class Geometry:
    size_zyx: tuple[int, int, int]
    spacing_zyx: tuple[float, float, float]
    origin_xyz: tuple[float, float, float]
    direction: tuple[float, ...]  # 9 values, row-major, ITK order (columns = index axes x, y, z)


def _random_direction(rng: np.random.Generator) -> np.ndarray:
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


def _random_geometry(task: int, rng: np.random.Generator) -> tuple[Geometry, np.ndarray]:
    """Voxel grid; returns the geometry and the world position of the anatomical centre."""
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
    d = _random_direction(rng)
    spacing_xyz = np.array([sxy, sxy, sz])
    size_xyz = np.array([nx, ny, nz])
    centre_world = np.array([rng.uniform(-40, 40), rng.uniform(-60, 40), rng.uniform(-400, 150)])
    # where the field of view is centred relative to the anatomy (patient frame)
    fov_offset = np.array([rng.uniform(-12, 12), rng.uniform(0, 25), rng.uniform(-20, 20)])
    origin = centre_world + fov_offset - d @ ((size_xyz - 1) * spacing_xyz / 2.0)
    origin = np.round(origin, 3)
    geom = Geometry((nz, ny, nx), (sz, sxy, sxy), tuple(float(v) for v in origin),
                    tuple(float(v) for v in np.round(d, 12).ravel()))
    return geom, centre_world


class _Grid:
    """Patient-frame millimetre coordinates of every voxel (float64), with box helpers."""

    def __init__(self, geom: Geometry, centre_world: np.ndarray):
        self.geom = geom
        nz, ny, nx = geom.size_zyx
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
        return self.x[sl], self.y[sl], self.z[sl]

    def sigma_vox(self, mm: float) -> tuple[float, float, float]:
        return tuple(mm / s for s in self.geom.spacing_zyx)


def _waves(rng: np.random.Generator, n: int, wl_lo: float, wl_hi: float):
    """Random plane waves (direction, wavenumber, phase, amplitude) for smooth mm-based fields."""
    out = []
    for _ in range(n):
        v = rng.normal(size=3)
        v /= np.linalg.norm(v)
        k = 2 * np.pi / rng.uniform(wl_lo, wl_hi)
        out.append((v * k, rng.uniform(0, 2 * np.pi), rng.uniform(0.5, 1.0)))
    return out


def _field(waves, x, y, z):
    f = np.zeros(np.broadcast_shapes(np.shape(x), np.shape(y), np.shape(z)))
    tot = 0.0
    for kv, ph, amp in waves:
        f += amp * np.cos(kv[0] * x + kv[1] * y + kv[2] * z + ph)
        tot += amp * amp
    return f / np.sqrt(tot / 2.0)  # roughly unit standard deviation


def _ellipsoid(x, y, z, c, ax, rot_z: float = 0.0):
    dx, dy, dz = x - c[0], y - c[1], z - c[2]
    if rot_z:
        ca, sa = np.cos(rot_z), np.sin(rot_z)
        dx, dy = ca * dx + sa * dy, -sa * dx + ca * dy
    return (dx / ax[0]) ** 2 + (dy / ax[1]) ** 2 + (dz / ax[2]) ** 2


def _spline(points: np.ndarray, n: int) -> np.ndarray:
    """Catmull-Rom curve through control points, n samples."""
    p = np.vstack([2 * points[0] - points[1], points, 2 * points[-1] - points[-2]])
    segs = len(points) - 1
    t = np.linspace(0, segs, n)
    i = np.minimum(t.astype(int), segs - 1)
    u = (t - i)[:, None]
    p0, p1, p2, p3 = p[i], p[i + 1], p[i + 2], p[i + 3]
    return 0.5 * ((2 * p1) + (-p0 + p2) * u + (2 * p0 - 5 * p1 + 4 * p2 - p3) * u ** 2 + (-p0 + 3 * p1 - 3 * p2 + p3) * u ** 3)


def _tube_distance(x, y, z, curve: np.ndarray):
    """Distance (mm) from each point to a sampled curve and the index of the nearest curve sample."""
    from scipy.spatial import cKDTree

    pts = np.stack([x.ravel(), y.ravel(), z.ravel()], axis=1)
    dist, idx = cKDTree(curve).query(pts)
    return dist.reshape(x.shape), idx.reshape(x.shape)


# --------------------------------------------------------------------------------------------
# intensities (arbitrary units, pancreas about 100 before the random scale)

_T1 = dict(air=0.0, subcut_fat=38.0, fat=34.0, muscle=48.0, liver=78.0, spleen=88.0, kid_cortex=135.0,
           kid_medulla=62.0, stomach_wall=95.0, stomach_content=22.0, bowel_wall=92.0, bowel_content=30.0,
           gas=4.0, vertebra=58.0, csf=18.0, aorta=210.0, ivc=58.0, portal=105.0, pancreas=100.0, duct=30.0)
_T2 = dict(air=0.0, subcut_fat=120.0, fat=110.0, muscle=38.0, liver=55.0, spleen=105.0, kid_cortex=115.0,
           kid_medulla=135.0, stomach_wall=60.0, stomach_content=210.0, bowel_wall=65.0, bowel_content=190.0,
           gas=5.0, vertebra=70.0, csf=240.0, aorta=18.0, ivc=22.0, portal=25.0, pancreas=80.0, duct=230.0)


PHANTOM_VERSION = 2
"""Version 2 (2026-12): the tumour is a visible lesion, as on clinical scans.  Version 1 drew a Task 1
tumour whose mean contrast (5-13 %) was below its own texture (18-26 %) plus noise, which no small network
learned in CPU hours; anatomy, sizes, locations, geometry and the order of the random draws are unchanged,
so a seed gives the same anatomy and tumour shape in both versions."""


def _task_params(task: int, rng: np.random.Generator) -> dict:
    if task == 1:
        # arterial-phase T1: the enhancing pancreas is the brightest parenchyma, PDAC a hypo-enhancing mass
        return dict(
            tab=dict(_T1),
            tumour_contrast=rng.uniform(-0.45, -0.25),  # tumour mean relative to the local pancreas
            tumour_tex=rng.uniform(0.06, 0.12),
            panc_tex=rng.uniform(0.04, 0.07),
            panc_gradient=rng.uniform(0.08, 0.18),
            noise=rng.uniform(0.04, 0.07),  # Rician sigma relative to the pancreas
            blur_vox=(0.35, 0.5, 0.5),
            bias=rng.uniform(0.12, 0.25),
        )
    # MR-Linac T2: subtler (mildly hyper-intense against a darker pancreas), lower SNR, softer effective
    # resolution (blur of about 1 mm in-plane)
    return dict(
        tab=dict(_T2),
        tumour_contrast=rng.uniform(0.18, 0.35),
        tumour_tex=rng.uniform(0.07, 0.12),
        panc_tex=rng.uniform(0.05, 0.08),
        panc_gradient=rng.uniform(0.08, 0.16),
        noise=rng.uniform(0.08, 0.12),
        blur_vox=(0.6, 1.0, 1.0),
        bias=rng.uniform(0.15, 0.3),
    )


# --------------------------------------------------------------------------------------------
# the phantom


def _phantom_arrays(task: int, seed: int, tumour_contrast_scale: float = 1.0):
    rng = np.random.default_rng([int(task), int(seed)])
    geom, centre_world = _random_geometry(task, rng)
    g = _Grid(geom, centre_world)
    p = _task_params(task, rng)
    if tumour_contrast_scale != 1.0:  # easier variant (curriculum pre-training); same anatomy and draws
        p["tumour_contrast"] *= float(tumour_contrast_scale)
    tab = p["tab"]
    for k in list(tab):  # per-phantom tissue variation
        tab[k] *= rng.uniform(0.92, 1.08)
    tab["pancreas"] = (100.0 if task == 1 else 80.0)
    s = rng.uniform(0.88, 1.12)  # patient size
    img = np.zeros(g.shape)
    lab = np.zeros(g.shape, dtype=np.uint8)
    x, y, z = g.x, g.y, g.z

    # body: elliptic cylinder with slowly varying outline, subcutaneous fat, muscle wall
    ax, ay = 150.0 * s * rng.uniform(0.92, 1.08), 112.0 * s * rng.uniform(0.9, 1.1)
    cy = 12.0 * s
    wob = _waves(rng, 3, 150, 400)
    rr = np.sqrt((x / ax) ** 2 + ((y - cy) / ay) ** 2) * (1.0 + 0.025 * _field(wob, x, y, z))
    fat_t = rng.uniform(10.0, 32.0)
    body = rr < 1.0
    img[body] = tab["subcut_fat"]
    r_in = 1.0 - fat_t / ((ax + ay) / 2)
    r_cav = r_in - 9.0 / ((ax + ay) / 2)
    img[body & (rr < r_in)] = tab["muscle"]
    cavity = rr < r_cav
    img[cavity] = tab["fat"]

    # spine, canal, paraspinal muscles (constant along z with slight lordosis)
    sy0 = 58.0 * s + 0.05 * z
    vert = (x / (19 * s)) ** 2 + ((y - sy0) / (17 * s)) ** 2 < 1.0
    para = (((np.abs(x) - 33 * s) / (22 * s)) ** 2 + ((y - sy0 - 38 * s) / (19 * s)) ** 2) < 1.0
    img[para & body] = tab["muscle"]
    arch = ((x / (16 * s)) ** 2 + ((y - sy0 - 27 * s) / (13 * s)) ** 2) < 1.0
    img[arch] = tab["vertebra"] * 0.9
    canal = (x / (8 * s)) ** 2 + ((y - sy0 - 27 * s) / (7 * s)) ** 2 < 1.0
    img[vert] = tab["vertebra"]
    img[canal] = tab["csf"]

    # bowel loops: thresholded smooth field in the anterior / inferior cavity, textured content
    sl = g.box((-ax, -ay + cy, -300), (ax, 40, 300))
    bx, by, bz = g.sub(sl)
    bw = _waves(rng, 10, 35, 70)
    bf = _field(bw, bx, by, bz)
    region = cavity[sl] & (by < 25 * s + 0.3 * np.maximum(-bz, 0))
    wall = region & (np.abs(bf) < 0.55)
    lumen = region & (np.abs(bf) < 0.35)
    sub = img[sl]
    sub[wall] = tab["bowel_wall"]
    tex = ndimage.gaussian_filter(rng.standard_normal(bx.shape), g.sigma_vox(1.6))
    tex /= max(float(np.sqrt(np.mean(tex * tex))), 1e-9)
    content = tab["bowel_content"] * (1.0 + 0.35 * tex)
    sub[lumen] = content[lumen]
    gas = lumen & (tex > 1.4)
    sub[gas] = tab["gas"]

    # liver (with dome), spleen, kidneys, stomach
    liver = _ellipsoid(x, y, z, (-68 * s, 2 * s, 60 * s), (88 * s, 80 * s, 95 * s), rng.uniform(-0.2, 0.1))
    liver += 0.06 * _field(_waves(rng, 3, 60, 160), x, y, z)
    liver_m = (liver < 1.0) & cavity & (x < 30 * s)
    lw = _field(_waves(rng, 4, 8, 25), x, y, z)
    img[liver_m] = (tab["liver"] * (1 + 0.03 * lw))[liver_m]
    spleen = _ellipsoid(x, y, z, (98 * s, 42 * s, 55 * s), (32 * s, 48 * s, 55 * s), rng.uniform(-0.6, -0.3))
    spleen_m = (spleen + 0.08 * _field(_waves(rng, 3, 40, 90), x, y, z) < 1.0) & cavity
    zebra = _field(_waves(rng, 3, 12, 25), x, y, z) if task == 1 else 0.3 * lw
    img[spleen_m] = (tab["spleen"] * (1 + 0.08 * zebra))[spleen_m]
    for side in (-1, 1):
        c = (side * 68 * s, 58 * s, (-25 if side < 0 else -12) * s)
        k = _ellipsoid(x, y, z, c, (27 * s, 24 * s, 55 * s), side * rng.uniform(0.3, 0.6))
        img[(k < 1.0) & cavity] = tab["kid_cortex"]
        img[(k < 0.45) & cavity] = tab["kid_medulla"]
        img[(k < 0.12) & cavity] = tab["fat"]  # sinus
    st = _ellipsoid(x, y, z, (48 * s, -42 * s, 48 * s), (55 * s, 33 * s, 48 * s), rng.uniform(-0.7, -0.4))
    st += 0.05 * _field(_waves(rng, 3, 40, 100), x, y, z)
    img[(st < 1.0) & cavity] = tab["stomach_wall"]
    img[(st < 0.72) & cavity] = tab["stomach_content"]

    # vessels
    aorta = ((x - 10 * s) / (11 * s)) ** 2 + ((y - 32 * s - 0.05 * z) / (11 * s)) ** 2 < 1.0
    img[aorta] = tab["aorta"]
    ivc = ((x + 26 * s) / (14 * s)) ** 2 + ((y - 28 * s) / (10 * s)) ** 2 < 1.0
    img[ivc & (z < 60 * s)] = tab["ivc"]

    # pancreas centreline: head -> neck -> body -> tail (control points perturbed)
    cp = np.array([[-38, 20, -32], [-36, 10, -14], [-12, -8, -2], [22, -6, 8], [55, 10, 16], [86, 32, 24]], float)
    cp = cp * s + rng.normal(0, 4.0, size=cp.shape) * np.array([1, 1, 0.7])
    curve = _spline(cp, 240)
    tpar = np.linspace(0, 1, len(curve))
    rad = np.interp(tpar, [0, 0.18, 0.35, 0.55, 1.0], np.array([17.0, 14.0, 9.5, 11.0, 8.3]) * s * rng.uniform(0.85, 1.15))
    lo, hi = curve.min(0) - 28, curve.max(0) + 28

    # SMV / portal vein (vertical, left of head) and splenic vein (posterior to body and tail)
    smv = ((x + 12 * s + 0.1 * z) / (7 * s)) ** 2 + ((y - 14 * s) / (7 * s)) ** 2 < 1.0
    img[smv & (z < 20 * s) & (z > -70 * s)] = tab["portal"]
    normal_off = np.array([0.0, 1.0, 0.2])
    svc = curve[90:225] + normal_off * (rad[90:225, None] + 5.0)
    psl = g.box(lo, hi)
    px, py, pz = g.sub(psl)
    dsv, _ = _tube_distance(px, py, pz, svc)
    isub = img[psl]
    isub[dsv < 4.5 * s] = tab["portal"]

    # duodenum: C-loop around the head
    dcp = np.array([[-8, -18, 14], [-44, -14, 6], [-66, 8, -14], [-58, 24, -44], [-24, 28, -58], [10, 24, -54]], float) * s
    dcurve = _spline(dcp + rng.normal(0, 3, size=dcp.shape), 160)
    dlo, dhi = dcurve.min(0) - 20, dcurve.max(0) + 20
    dsl = g.box(dlo, dhi)
    dx_, dy_, dz_ = g.sub(dsl)
    dd, _ = _tube_distance(dx_, dy_, dz_, dcurve)
    dsub = img[dsl]
    dr = 11.0 * s
    dsub[(dd < dr) & cavity[dsl]] = tab["bowel_wall"]
    dsub[(dd < dr - 2.5) & cavity[dsl]] = tab["bowel_content"] * 1.1

    # pancreas tube with lobulated surface
    dist, nearest = _tube_distance(px, py, pz, curve)
    lob = _field(_waves(rng, 6, 9, 22), px, py, pz)
    rloc = rad[nearest] * (1.0 + 0.12 * lob)
    panc = dist < rloc
    t_loc = tpar[nearest]

    # tumour: 1-3 lobes near a point of the centreline, 5-50 mm equivalent diameter
    head_case = rng.random() < 0.6
    t0 = rng.uniform(0.05, 0.3) if head_case else rng.uniform(0.35, 0.92)
    ci = int(round(t0 * (len(curve) - 1)))
    diam = 5.0 + 45.0 * rng.beta(2.2, 2.8)
    r_t = diam / 2.0
    off_dir = rng.normal(size=3)
    off_dir /= np.linalg.norm(off_dir)
    edge = rng.random() < 0.35  # sits at the edge and bulges out of the pancreas
    off = off_dir * (rad[ci] * rng.uniform(0.5, 0.9) if edge else rad[ci] * rng.uniform(0.0, 0.4))
    tc = curve[ci] + off
    n_lobes = int(rng.choice([1, 1, 2, 3]))
    tf = np.full(px.shape, np.inf)
    for li in range(n_lobes):
        if li == 0:
            c, axes = tc, r_t * rng.uniform(0.8, 1.2, size=3)
        else:
            v = rng.normal(size=3)
            v /= np.linalg.norm(v)
            c, axes = tc + v * r_t * rng.uniform(0.4, 0.8), r_t * rng.uniform(0.45, 0.75, size=3)
        rot = rng.uniform(-np.pi, np.pi)
        tf = np.minimum(tf, _ellipsoid(px, py, pz, c, axes, rot))
    tw = _waves(rng, 6, max(6.0, r_t * 0.8), max(12.0, r_t * 2.5))
    tf = np.sqrt(tf) + 0.13 * _field(tw, px, py, pz)
    # keep the tumour inside the pancreas grown by a few millimetres (at most at its edge)
    grown = dist < rloc + (rng.uniform(3.0, 7.0) if edge else 1.5)
    tum = (tf < 1.0) & grown
    if not tum.any():  # tiny tumour lost to rounding: force the nearest voxel
        tum[np.unravel_index(np.argmin(tf), tf.shape)] = True

    # intensities of pancreas and tumour
    grad = p["panc_gradient"] * rng.choice([-1.0, 1.0])
    knots = np.interp(t_loc, [0.0, 0.25, 0.5, 0.75, 1.0], rng.uniform(-0.08, 0.08, size=5))
    pan_base = tab["pancreas"] * (1.0 + grad * (t_loc - 0.5) + knots + 0.04 * _field(_waves(rng, 3, 30, 80), px, py, pz))
    ptex = ndimage.gaussian_filter(rng.standard_normal(px.shape), g.sigma_vox(1.3))
    ptex /= max(float(np.sqrt(np.mean(ptex * ptex))), 1e-9)
    pan_int = pan_base * (1.0 + p["panc_tex"] * ptex)
    # upstream (towards the tail) of the tumour: dilated duct, sometimes hypo-intense parenchyma
    upstream = t_loc > t0 + r_t / 150.0
    if rng.random() < 0.5:
        pan_int = np.where(upstream, pan_int * (1.0 - rng.uniform(0.04, 0.1)) if task == 1 else pan_int * 1.05, pan_int)
    isub = img[psl]
    isub[panc] = pan_int[panc]
    up_r = rng.uniform(2.5, 4.5) if rng.random() < 0.8 else rng.uniform(1.5, 2.5)  # duct dilated upstream
    duct = panc & (dist < np.where(upstream, up_r, 1.2))
    # fluid-filled side-branch cysts away from the tumour (pancreas label)
    for _ in range(int(rng.integers(0, 4))):
        tc_ = rng.uniform(0.05, 0.95)
        if abs(tc_ - t0) < 0.15:
            continue
        ck = int(round(tc_ * (len(curve) - 1)))
        v = rng.normal(size=3)
        cc = curve[ck] + v / np.linalg.norm(v) * rad[ck] * rng.uniform(0.0, 0.5)
        duct |= panc & (_ellipsoid(px, py, pz, cc, rng.uniform(2.5, 6.0, size=3)) < 1.0)
    isub[duct] = tab["duct"] * (1.0 + 0.1 * ptex[duct])
    ttex = ndimage.gaussian_filter(rng.standard_normal(px.shape), g.sigma_vox(rng.uniform(1.5, 2.5)))
    ttex /= max(float(np.sqrt(np.mean(ttex * ttex))), 1e-9)
    t_int = pan_base * (1.0 + p["tumour_contrast"]) * (1.0 + p["tumour_tex"] * ttex)
    if diam > 22 and rng.random() < 0.5:  # necrotic / hypovascular core
        core = tf < rng.uniform(0.35, 0.55)
        t_int = np.where(core, t_int * (1.0 + (-0.15 if task == 1 else 0.25)), t_int)
    isub[tum] = t_int[tum]
    lsub = lab[psl]
    lsub[panc] = 2
    lsub[tum] = 1

    # imaging chain: partial volume blur, bias field, intensity scale, Rician noise, int16
    img = ndimage.gaussian_filter(img, p["blur_vox"], mode="nearest")
    bias = np.exp(p["bias"] * _field(_waves(rng, 3, 350, 700), x, y, z))
    img *= bias
    scale = float(np.exp(rng.uniform(np.log(0.6), np.log(6.0))))
    sigma = p["noise"] * tab["pancreas"]
    img = np.sqrt((img + rng.normal(0.0, sigma, img.shape)) ** 2 + rng.normal(0.0, sigma, img.shape) ** 2) * scale
    img = np.clip(np.rint(img), 0, 32767).astype(np.int16)
    meta = dict(task=int(task), seed=int(seed), tumour_diameter_mm=round(float(diam), 2), lobes=n_lobes,
                tumour_in_head=bool(head_case), tumour_at_edge=bool(edge), intensity_scale=round(scale, 4))
    return img, lab, geom, meta, case_uuid(task, seed)


def _to_image(arr: np.ndarray, geom: Geometry) -> sitk.Image:
    im = sitk.GetImageFromArray(arr)
    im.SetSpacing((geom.spacing_zyx[2], geom.spacing_zyx[1], geom.spacing_zyx[0]))
    im.SetOrigin(geom.origin_xyz)
    im.SetDirection(geom.direction)
    return im


def generate_phantom(task: int, seed: int, tumour_contrast_scale: float = 1.0) -> tuple[sitk.Image, sitk.Image]:
    """(image int16, label uint8 with 0 background, 1 tumour, 2 pancreas) for this task and seed.

    tumour_contrast_scale multiplies the tumour's mean contrast against the pancreas (1.0: the standard
    phantom; larger: an easier variant with the same anatomy, used only for curriculum pre-training).
    """
    img, lab, geom, _, _ = _phantom_arrays(task, seed, tumour_contrast_scale)
    return _to_image(img, geom), _to_image(lab, geom)


def phantom_info(task: int, seed: int) -> dict:
    """Geometry and tumour facts of one phantom (generates it)."""
    img, lab, geom, meta, uid = _phantom_arrays(task, seed)
    vox = float(np.prod(geom.spacing_zyx))
    meta.update(uuid=uid, size_zyx=list(geom.size_zyx), spacing_zyx=list(geom.spacing_zyx),
                origin_xyz=list(geom.origin_xyz), direction=list(geom.direction),
                tumour_ml=round(int((lab == 1).sum()) * vox / 1000, 3),
                pancreas_ml=round(int((lab == 2).sum()) * vox / 1000, 3))
    return meta


def case_uuid(task: int, seed: int) -> str:
    """The phantom's file name stem: a version-4 uuid drawn from its own stream of the seeded generator."""
    rng = np.random.default_rng([int(task), int(seed), 0x5E11])
    return str(uuid.UUID(int=int(rng.integers(0, 2 ** 63)) << 64 | int(rng.integers(0, 2 ** 63)), version=4))


def _write(im: sitk.Image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(im, str(path), useCompression=True)


def write_nnunet_dataset(out_dir, task: int, seeds, dataset_id: int, dataset_name: str,
                         tumour_contrast_scale: float = 1.0) -> Path:
    """nnU-Net v2 raw dataset out_dir/DatasetXXX_Name with one case per seed; returns its folder."""
    seeds = [int(v) for v in seeds]
    root = Path(out_dir) / f"Dataset{int(dataset_id):03d}_{dataset_name}"
    for sub in ("imagesTr", "labelsTr"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for sd in seeds:
        case = f"phantom_t{task}_{sd:04d}"
        img, lab = generate_phantom(task, sd, tumour_contrast_scale)
        _write(img, root / "imagesTr" / f"{case}_0000.mha")
        _write(lab, root / "labelsTr" / f"{case}.mha")
        log.info("wrote %s", case)
    meta = {
        "channel_names": {"0": "MRI"},
        "labels": dict(LABELS),
        "numTraining": len(seeds),
        "file_ending": ".mha",
        "name": dataset_name,
        "description": f"synthetic PANTHER Task {task} phantoms (panther_ensemble.phantoms), seeds {_fmt_seeds(seeds)}"
                       + (f", tumour contrast x{tumour_contrast_scale}" if tumour_contrast_scale != 1.0 else ""),
    }
    (root / "dataset.json").write_text(json.dumps(meta, indent=2) + "\n")
    return root


def write_socket_case(out_dir, task: int, seed: int, case_uuid: str | None = None, ground_truth_dir=None):
    """PANTHER socket layout: out_dir/images/<slug>/<uuid>.mha and out_dir/inputs.json.

    The uuid defaults to the one drawn from the phantom's own generator.  When ground_truth_dir is
    given the label is written there as <uuid>.mha.  Returns (image path, label image).
    """
    img_arr, lab_arr, geom, _, uid = _phantom_arrays(task, seed)
    uid = case_uuid or uid
    slug = SLUGS[int(task)]
    out = Path(out_dir)
    ipath = out / "images" / slug / f"{uid}.mha"
    _write(_to_image(img_arr, geom), ipath)
    inputs = [{"interface": {"slug": slug, "kind": "Image", "relative_path": f"images/{slug}"},
               "image": {"name": f"{uid}.mha"}}]
    (out / "inputs.json").write_text(json.dumps(inputs, indent=2) + "\n")
    label = _to_image(lab_arr, geom)
    if ground_truth_dir is not None:
        _write(label, Path(ground_truth_dir) / f"{uid}.mha")
    return ipath, label


# --------------------------------------------------------------------------------------------
# baseline: threshold inside the TRUE pancreas + tumour mask


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    s = int(a.sum()) + int(b.sum())
    return 1.0 if s == 0 else 2.0 * int((a & b).sum()) / s


def _baseline_samples(task: int, seed: int, dataset_dir=None):
    if dataset_dir is not None and (Path(dataset_dir) / "labelsTr" / f"phantom_t{task}_{seed:04d}.mha").is_file():
        # the same phantom, already written by write_nnunet_dataset: read instead of regenerating
        d = Path(dataset_dir)
        img = sitk.GetArrayFromImage(sitk.ReadImage(str(d / "imagesTr" / f"phantom_t{task}_{seed:04d}_0000.mha")))
        lab = sitk.GetArrayFromImage(sitk.ReadImage(str(d / "labelsTr" / f"phantom_t{task}_{seed:04d}.mha")))
    else:
        img, lab, _, _, _ = _phantom_arrays(task, seed)
    m = lab > 0
    v = img[m].astype(np.float64)
    v /= max(float(np.median(v)), 1e-9)  # normalise by the organ's median (removes the random scale)
    return v, lab[m] == 1


def threshold_baseline(task: int, train_seeds, test_seeds, dataset_dir=None) -> dict:
    """Best-on-train global threshold (on intensity / organ median) inside the true organ mask.

    Task 1 tumours are hypo-intense (tumour = below the threshold), Task 2 hyper-intense (above).
    Returns the threshold, the train Dice and the per-case test Dice.  dataset_dir: an nnU-Net raw
    dataset written by write_nnunet_dataset for this task, read instead of regenerating training phantoms.
    """
    below = task == 1
    train = [_baseline_samples(task, s, dataset_dir) for s in train_seeds]
    cands = np.linspace(0.5, 1.5, 101)

    def case_dice(v, t, thr):
        pred = v < thr if below else v > thr
        return _dice(pred, t)

    mean_train = [float(np.mean([case_dice(v, t, c) for v, t in train])) for c in cands]
    best = int(np.argmax(mean_train))
    thr = float(cands[best])
    test = {int(s): case_dice(*_baseline_samples(task, s), thr) for s in test_seeds}
    return {"task": task, "threshold": thr, "train_dice": mean_train[best],
            "test_dice_mean": float(np.mean(list(test.values()))), "test_dice": test,
            "train_seeds": _fmt_seeds(train_seeds), "test_seeds": _fmt_seeds(test_seeds)}


# --------------------------------------------------------------------------------------------
# command line


def _parse_seeds(text: str) -> list[int]:
    out: list[int] = []
    for part in str(text).split(","):
        part = part.strip()
        if not part:
            continue
        if "-" in part[1:]:
            a, b = part.split("-", 1) if not part.startswith("-") else (part, part)
            out.extend(range(int(a), int(b) + 1))
        else:
            out.append(int(part))
    return out


def _fmt_seeds(seeds) -> str:
    seeds = sorted(int(v) for v in seeds)
    if seeds and seeds == list(range(seeds[0], seeds[-1] + 1)) and len(seeds) > 2:
        return f"{seeds[0]}-{seeds[-1]}"
    return ",".join(str(v) for v in seeds)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="phantom_action", metavar="ACTION")
    sub.required = True
    p = sub.add_parser("socket", help="one case in the PANTHER socket layout (images/<slug>/<uuid>.mha + inputs.json)")
    p.add_argument("--task", type=int, choices=(1, 2), required=True)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--out", required=True, help="folder that plays /input")
    p.add_argument("--ground-truth", default=None, help="folder for the label <uuid>.mha")
    p = sub.add_parser("dataset", help="an nnU-Net v2 raw dataset (imagesTr, labelsTr, dataset.json)")
    p.add_argument("--task", type=int, choices=(1, 2), required=True)
    p.add_argument("--seeds", required=True, help="e.g. 0-59 or 1,2,5")
    p.add_argument("--out", required=True, help="nnUNet_raw folder")
    p.add_argument("--dataset-id", type=int, required=True)
    p.add_argument("--dataset-name", default=None, help="default PhantomT<task>")
    p.add_argument("--tumour-contrast-scale", type=float, default=1.0,
                   help="multiply the tumour's mean contrast (easier phantoms for curriculum pre-training)")
    p = sub.add_parser("baseline", help="best-on-train intensity threshold inside the true pancreas+tumour mask")
    p.add_argument("--task", type=int, choices=(1, 2), required=True)
    p.add_argument("--train-seeds", default="0-59")
    p.add_argument("--test-seeds", default="1000-1011")
    p.add_argument("--json", default=None, help="also write the result here")
    p.add_argument("--dataset-dir", default=None,
                   help="nnU-Net raw dataset of this task to read training phantoms from (else regenerated)")
    p = sub.add_parser("info", help="print geometry and tumour facts of phantoms as JSON lines")
    p.add_argument("--task", type=int, choices=(1, 2), required=True)
    p.add_argument("--seeds", required=True)


def main(args) -> int:
    act = args.phantom_action
    if act == "socket":
        ipath, _ = write_socket_case(args.out, args.task, args.seed, ground_truth_dir=args.ground_truth)
        print(ipath)
    elif act == "dataset":
        root = write_nnunet_dataset(args.out, args.task, _parse_seeds(args.seeds), args.dataset_id,
                                    args.dataset_name or f"PhantomT{args.task}", args.tumour_contrast_scale)
        print(root)
    elif act == "baseline":
        res = threshold_baseline(args.task, _parse_seeds(args.train_seeds), _parse_seeds(args.test_seeds),
                                 args.dataset_dir)
        text = json.dumps(res, indent=2)
        print(text)
        if args.json:
            Path(args.json).write_text(text + "\n")
    elif act == "info":
        for sd in _parse_seeds(args.seeds):
            print(json.dumps(phantom_info(args.task, sd)))
    return 0


if __name__ == "__main__":
    from .cli import main as _cli_main

    sys.exit(_cli_main(["phantom", *sys.argv[1:]]))
