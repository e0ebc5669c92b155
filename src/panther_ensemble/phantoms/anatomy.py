"""The abdomen of a phantom, painted in patient millimetres onto its voxel grid.

One function per structure, called by `paint_abdomen` in a fixed order: later structures overwrite
earlier ones, and every function draws its random numbers from the phantom's one generator, so the
order of the calls is part of the phantom (changing it changes every phantom: a new PHANTOM_VERSION).

    body_wall          elliptic body, subcutaneous fat, muscle wall; the abdominal cavity inside it
    spine              vertebral body, arch, spinal canal, paraspinal muscles
    bowel              loops with wall, textured content and gas in the anterior / inferior cavity
    solid_organs       liver, spleen, kidneys (cortex, medulla, sinus), stomach (wall, content)
    pancreas_centreline  head -> neck -> body -> tail curve and its radius (no painting)
    vessels            aorta, inferior vena cava, SMV / portal vein, splenic vein behind the pancreas
    duodenum           C-loop around the pancreatic head
    pancreas_shape     lobulated tube around the centreline
    tumour_shape       1-3 ellipsoidal lobes with a noisy surface, in the pancreas or bulging from its edge
    paint_pancreas     parenchyma (gradient, segments, texture, hypo-intense upstream), duct, cysts
    paint_tumour       heterogeneous tumour, sometimes with a necrotic core

Labels: 2 = pancreas (with duct and cysts), 1 = tumour.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .geometry import Grid, ellipsoid, field, field_bound, organ_box, spline, tube_distance, waves
from .imaging import Look


@dataclass
class Canvas:
    """What every structure paints on: the voxel grid, the image and label arrays, the generator."""

    grid: Grid
    rng: np.random.Generator
    look: Look
    s: float  # patient size factor (1.0: an average adult)
    img: np.ndarray  # float64 intensities (z, y, x)
    lab: np.ndarray  # uint8 labels (z, y, x)

    @property
    def tissue(self) -> dict[str, float]:
        return self.look.tissue


@dataclass
class Body:
    ax: float  # semi-axes of the body outline (mm)
    ay: float
    cy: float  # its centre's y
    inside: np.ndarray  # inside the body outline
    cavity: np.ndarray  # inside the muscle wall


@dataclass
class Centreline:
    curve: np.ndarray  # (n, 3) points, head (t = 0) to tail (t = 1)
    t: np.ndarray  # position along it, 0..1
    radius: np.ndarray  # pancreas radius (mm) at each point
    box: tuple  # voxel slices around the pancreas (with a 28 mm margin)


@dataclass
class Gland:
    """The pancreas inside `Centreline.box`."""

    coords: tuple  # (x, y, z) mm of the box's voxels
    dist: np.ndarray  # distance to the centreline
    rloc: np.ndarray  # local (lobulated) radius at the nearest centreline point
    t: np.ndarray  # position along the centreline of the nearest point
    mask: np.ndarray


@dataclass
class Tumour:
    """The tumour inside `Centreline.box`."""

    mask: np.ndarray
    tf: np.ndarray  # normalised radius (< 1 inside), for the necrotic core
    t0: float  # position along the centreline
    diameter: float  # equivalent diameter (mm)
    lobes: int
    in_head: bool
    at_edge: bool


def paint_abdomen(grid: Grid, look: Look, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, dict]:
    """(float64 image, uint8 label, tumour facts) of one abdomen, before the imaging chain."""
    c = Canvas(grid, rng, look, rng.uniform(0.88, 1.12), np.zeros(grid.shape), np.zeros(grid.shape, np.uint8))
    body = body_wall(c)
    spine(c, body)
    bowel(c, body)
    solid_organs(c, body)
    centre = pancreas_centreline(c)
    vessels(c, centre)
    duodenum(c, body)
    gland = pancreas_shape(c, centre)
    tumour = tumour_shape(c, centre, gland)
    pan_base = paint_pancreas(c, centre, gland, tumour)
    paint_tumour(c, centre, tumour, pan_base)
    lsub = c.lab[centre.box]
    lsub[gland.mask] = 2
    lsub[tumour.mask] = 1
    facts = dict(tumour_diameter_mm=round(float(tumour.diameter), 2), lobes=tumour.lobes,
                 tumour_in_head=bool(tumour.in_head), tumour_at_edge=bool(tumour.at_edge))
    return c.img, c.lab, facts


def body_wall(c: Canvas) -> Body:
    """Elliptic cylinder with a slowly varying outline: subcutaneous fat, a 9 mm muscle wall, cavity fat."""
    g, rng, tab, s, img = c.grid, c.rng, c.tissue, c.s, c.img
    x, y, z = g.x, g.y, g.z
    ax, ay = 150.0 * s * rng.uniform(0.92, 1.08), 112.0 * s * rng.uniform(0.9, 1.1)
    cy = 12.0 * s
    wob = waves(rng, 3, 150, 400)
    rr = np.sqrt((x / ax) ** 2 + ((y - cy) / ay) ** 2) * (1.0 + 0.025 * field(wob, x, y, z))
    fat_t = rng.uniform(10.0, 32.0)
    body = rr < 1.0
    img[body] = tab["subcut_fat"]
    r_in = 1.0 - fat_t / ((ax + ay) / 2)
    r_cav = r_in - 9.0 / ((ax + ay) / 2)
    img[body & (rr < r_in)] = tab["muscle"]
    cavity = rr < r_cav
    img[cavity] = tab["fat"]
    return Body(ax, ay, cy, body, cavity)


def spine(c: Canvas, body: Body) -> None:
    """Vertebral body, arch, canal and paraspinal muscles, constant along z with a slight lordosis."""
    g, tab, s, img = c.grid, c.tissue, c.s, c.img
    x, y, z = g.x, g.y, g.z
    sy0 = 58.0 * s + 0.05 * z
    vert = (x / (19 * s)) ** 2 + ((y - sy0) / (17 * s)) ** 2 < 1.0
    para = (((np.abs(x) - 33 * s) / (22 * s)) ** 2 + ((y - sy0 - 38 * s) / (19 * s)) ** 2) < 1.0
    img[para & body.inside] = tab["muscle"]
    arch = ((x / (16 * s)) ** 2 + ((y - sy0 - 27 * s) / (13 * s)) ** 2) < 1.0
    img[arch] = tab["vertebra"] * 0.9
    canal = (x / (8 * s)) ** 2 + ((y - sy0 - 27 * s) / (7 * s)) ** 2 < 1.0
    img[vert] = tab["vertebra"]
    img[canal] = tab["csf"]


def bowel(c: Canvas, body: Body) -> None:
    """Loops = bands of a thresholded smooth field in the anterior / inferior cavity; textured content, gas."""
    g, rng, tab, s = c.grid, c.rng, c.tissue, c.s
    sl = g.box((-body.ax, -body.ay + body.cy, -300), (body.ax, 40, 300))
    bx, by, bz = g.sub(sl)
    bf = field(waves(rng, 10, 35, 70), bx, by, bz)
    region = body.cavity[sl] & (by < 25 * s + 0.3 * np.maximum(-bz, 0))
    wall = region & (np.abs(bf) < 0.55)
    lumen = region & (np.abs(bf) < 0.35)
    sub = c.img[sl]
    sub[wall] = tab["bowel_wall"]
    tex = ndimage.gaussian_filter(rng.standard_normal(bx.shape), g.sigma_vox(1.6))
    tex /= max(float(np.sqrt(np.mean(tex * tex))), 1e-9)
    content = tab["bowel_content"] * (1.0 + 0.35 * tex)
    sub[lumen] = content[lumen]
    gas = lumen & (tex > 1.4)
    sub[gas] = tab["gas"]


def solid_organs(c: Canvas, body: Body) -> None:
    """Liver (with dome and texture), spleen (arterial-phase zebra on Task 1), kidneys, stomach.

    Each organ is computed in a box around it (`organ_box`) instead of on the whole grid: every voxel gets the
    same value as on the whole grid, bit for bit (the pinned phantoms of tests/test_phantoms.py), at a fraction
    of the cost."""
    g, rng, tab, s, img = c.grid, c.rng, c.tissue, c.s, c.img
    cavity = body.cavity
    centre, axes, rot = (-68 * s, 2 * s, 60 * s), (88 * s, 80 * s, 95 * s), rng.uniform(-0.2, 0.1)
    liver_waves = waves(rng, 3, 60, 160)
    sl = organ_box(g, centre, axes, 1.0 + 0.06 * field_bound(liver_waves))
    x, y, z = g.sub(sl)
    liver = ellipsoid(x, y, z, centre, axes, rot)
    liver += 0.06 * field(liver_waves, x, y, z)
    liver_m = (liver < 1.0) & cavity[sl] & (x < 30 * s)
    texture_waves = waves(rng, 4, 8, 25)  # the liver's texture; on Task 2 the spleen's too
    lw = field(texture_waves, x, y, z)
    img[sl][liver_m] = (tab["liver"] * (1 + 0.03 * lw))[liver_m]
    centre, axes, rot = (98 * s, 42 * s, 55 * s), (32 * s, 48 * s, 55 * s), rng.uniform(-0.6, -0.3)
    spleen_waves = waves(rng, 3, 40, 90)
    sl = organ_box(g, centre, axes, 1.0 + 0.08 * field_bound(spleen_waves))
    x, y, z = g.sub(sl)
    spleen_m = (ellipsoid(x, y, z, centre, axes, rot) + 0.08 * field(spleen_waves, x, y, z) < 1.0) & cavity[sl]
    zebra = field(waves(rng, 3, 12, 25), x, y, z) if c.look.task == 1 else 0.3 * field(texture_waves, x, y, z)
    img[sl][spleen_m] = (tab["spleen"] * (1 + 0.08 * zebra))[spleen_m]
    for side in (-1, 1):
        centre, axes = (side * 68 * s, 58 * s, (-25 if side < 0 else -12) * s), (27 * s, 24 * s, 55 * s)
        rot = side * rng.uniform(0.3, 0.6)
        sl = organ_box(g, centre, axes, 1.0)
        k = ellipsoid(*g.sub(sl), centre, axes, rot)
        sub, cav = img[sl], cavity[sl]
        sub[(k < 1.0) & cav] = tab["kid_cortex"]
        sub[(k < 0.45) & cav] = tab["kid_medulla"]
        sub[(k < 0.12) & cav] = tab["fat"]  # sinus
    centre, axes, rot = (48 * s, -42 * s, 48 * s), (55 * s, 33 * s, 48 * s), rng.uniform(-0.7, -0.4)
    stomach_waves = waves(rng, 3, 40, 100)
    sl = organ_box(g, centre, axes, 1.0 + 0.05 * field_bound(stomach_waves))
    x, y, z = g.sub(sl)
    st = ellipsoid(x, y, z, centre, axes, rot)
    st += 0.05 * field(stomach_waves, x, y, z)
    sub, cav = img[sl], cavity[sl]
    sub[(st < 1.0) & cav] = tab["stomach_wall"]
    sub[(st < 0.72) & cav] = tab["stomach_content"]


def pancreas_centreline(c: Canvas) -> Centreline:
    """Head -> neck -> body -> tail through perturbed control points; radius 17 mm (head) to 8.3 (tail)."""
    rng, s = c.rng, c.s
    cp = np.array([[-38, 20, -32], [-36, 10, -14], [-12, -8, -2], [22, -6, 8], [55, 10, 16], [86, 32, 24]], float)
    cp = cp * s + rng.normal(0, 4.0, size=cp.shape) * np.array([1, 1, 0.7])
    curve = spline(cp, 240)
    tpar = np.linspace(0, 1, len(curve))
    rad = np.interp(tpar, [0, 0.18, 0.35, 0.55, 1.0], np.array([17.0, 14.0, 9.5, 11.0, 8.3]) * s * rng.uniform(0.85, 1.15))
    return Centreline(curve, tpar, rad, c.grid.box(curve.min(0) - 28, curve.max(0) + 28))


def vessels(c: Canvas, centre: Centreline) -> None:
    """Aorta, IVC, SMV / portal vein (left of the head) and splenic vein (behind the body and tail)."""
    g, tab, s, img = c.grid, c.tissue, c.s, c.img
    x, y, z = g.x, g.y, g.z
    aorta = ((x - 10 * s) / (11 * s)) ** 2 + ((y - 32 * s - 0.05 * z) / (11 * s)) ** 2 < 1.0
    img[aorta] = tab["aorta"]
    ivc = ((x + 26 * s) / (14 * s)) ** 2 + ((y - 28 * s) / (10 * s)) ** 2 < 1.0
    img[ivc & (z < 60 * s)] = tab["ivc"]
    smv = ((x + 12 * s + 0.1 * z) / (7 * s)) ** 2 + ((y - 14 * s) / (7 * s)) ** 2 < 1.0
    img[smv & (z < 20 * s) & (z > -70 * s)] = tab["portal"]
    normal_off = np.array([0.0, 1.0, 0.2])
    splenic = centre.curve[90:225] + normal_off * (centre.radius[90:225, None] + 5.0)
    dsv, _ = tube_distance(*g.sub(centre.box), splenic, within=4.5 * s + 1.0)
    img[centre.box][dsv < 4.5 * s] = tab["portal"]


def duodenum(c: Canvas, body: Body) -> None:
    """C-loop (wall and content, 11 mm radius) around the pancreatic head."""
    g, rng, tab, s = c.grid, c.rng, c.tissue, c.s
    dcp = np.array([[-8, -18, 14], [-44, -14, 6], [-66, 8, -14], [-58, 24, -44], [-24, 28, -58], [10, 24, -54]], float) * s
    dcurve = spline(dcp + rng.normal(0, 3, size=dcp.shape), 160)
    dsl = g.box(dcurve.min(0) - 20, dcurve.max(0) + 20)
    dr = 11.0 * s
    dd, _ = tube_distance(*g.sub(dsl), dcurve, within=dr + 1.0)
    dsub = c.img[dsl]
    dsub[(dd < dr) & body.cavity[dsl]] = tab["bowel_wall"]
    dsub[(dd < dr - 2.5) & body.cavity[dsl]] = tab["bowel_content"] * 1.1


def pancreas_shape(c: Canvas, centre: Centreline) -> Gland:
    """Tube around the centreline with a lobulated surface (radius +-12 %).

    Distances matter only up to the largest lobulated radius plus the 7 mm a tumour may bulge out of the
    gland (tumour_shape); beyond that the distance is inf and the nearest point a placeholder."""
    px, py, pz = c.grid.sub(centre.box)
    lobe_waves = waves(c.rng, 6, 9, 22)
    reach = float(centre.radius.max()) * (1.0 + 0.12 * field_bound(lobe_waves)) + 7.0 + 2.0
    dist, nearest = tube_distance(px, py, pz, centre.curve, within=reach)
    lob = field(lobe_waves, px, py, pz)
    rloc = centre.radius[nearest] * (1.0 + 0.12 * lob)
    return Gland((px, py, pz), dist, rloc, centre.t[nearest], dist < rloc)


def tumour_shape(c: Canvas, centre: Centreline, gland: Gland) -> Tumour:
    """1-3 lobes near a centreline point, equivalent diameter 5 + 45 Beta(2.2, 2.8) mm.

    60 % in the head; 35 % at the edge, bulging out of the pancreas by up to 3-7 mm.
    """
    rng = c.rng
    px, py, pz = gland.coords
    curve, rad = centre.curve, centre.radius
    head_case = rng.random() < 0.6
    t0 = rng.uniform(0.05, 0.3) if head_case else rng.uniform(0.35, 0.92)
    ci = int(round(t0 * (len(curve) - 1)))
    diam = 5.0 + 45.0 * rng.beta(2.2, 2.8)
    r_t = diam / 2.0
    off_dir = rng.normal(size=3)
    off_dir /= np.linalg.norm(off_dir)
    edge = rng.random() < 0.35
    off = off_dir * (rad[ci] * rng.uniform(0.5, 0.9) if edge else rad[ci] * rng.uniform(0.0, 0.4))
    tc = curve[ci] + off
    n_lobes = int(rng.choice([1, 1, 2, 3]))
    tf = np.full(px.shape, np.inf)
    for li in range(n_lobes):
        if li == 0:
            cen, axes = tc, r_t * rng.uniform(0.8, 1.2, size=3)
        else:
            v = rng.normal(size=3)
            v /= np.linalg.norm(v)
            cen, axes = tc + v * r_t * rng.uniform(0.4, 0.8), r_t * rng.uniform(0.45, 0.75, size=3)
        rot = rng.uniform(-np.pi, np.pi)
        tf = np.minimum(tf, ellipsoid(px, py, pz, cen, axes, rot))
    tw = waves(rng, 6, max(6.0, r_t * 0.8), max(12.0, r_t * 2.5))
    tf = np.sqrt(tf) + 0.13 * field(tw, px, py, pz)
    # keep the tumour inside the pancreas grown by a few millimetres (at most at its edge)
    grown = gland.dist < gland.rloc + (rng.uniform(3.0, 7.0) if edge else 1.5)
    tum = (tf < 1.0) & grown
    if not tum.any():  # tiny tumour lost to rounding: force the nearest voxel
        forced = np.unravel_index(np.argmin(tf), tf.shape)
        tum[forced] = True
        if not np.isfinite(gland.dist[forced]):
            # beyond pancreas_shape's reach its nearest centreline point is a placeholder, and the tumour's
            # intensity there follows the pancreas base at that point (paint_pancreas): measure it exactly
            d, i = tube_distance(*(np.array([v[forced]]) for v in gland.coords), curve)
            gland.dist[forced], gland.t[forced] = d[0], centre.t[i[0]]
    return Tumour(tum, tf, t0, diam, n_lobes, head_case, edge)


def paint_pancreas(c: Canvas, centre: Centreline, gland: Gland, tumour: Tumour) -> np.ndarray:
    """Parenchyma, main duct and side-branch cysts; returns the parenchyma's base intensity (no texture).

    Base: a gradient of 8-18 % (Task 2: 8-16 %) from head to tail, of either sign, segmental variation
    (+-8 %) and a smooth field (4 %); a 1.3 mm texture of 4-7 % (Task 2: 5-8 %) on top.  Upstream of the tumour (towards the tail): half the time hypo-intense
    parenchyma (Task 1) or slightly brighter (Task 2), and a duct dilated to 2.5-4.5 mm radius in 80 %
    of cases.  0-3 fluid cysts away from the tumour.
    """
    g, rng, tab, look = c.grid, c.rng, c.tissue, c.look
    px, py, pz = gland.coords
    t_loc, panc = gland.t, gland.mask
    grad = look.pancreas_gradient * rng.choice([-1.0, 1.0])
    knots = np.interp(t_loc, [0.0, 0.25, 0.5, 0.75, 1.0], rng.uniform(-0.08, 0.08, size=5))
    pan_base = tab["pancreas"] * (1.0 + grad * (t_loc - 0.5) + knots + 0.04 * field(waves(rng, 3, 30, 80), px, py, pz))
    ptex = ndimage.gaussian_filter(rng.standard_normal(px.shape), g.sigma_vox(1.3))
    ptex /= max(float(np.sqrt(np.mean(ptex * ptex))), 1e-9)
    pan_int = pan_base * (1.0 + look.pancreas_texture * ptex)
    upstream = t_loc > tumour.t0 + tumour.diameter / 2.0 / 150.0
    if rng.random() < 0.5:
        pan_int = np.where(upstream, pan_int * (1.0 - rng.uniform(0.04, 0.1)) if look.task == 1 else pan_int * 1.05,
                           pan_int)
    isub = c.img[centre.box]
    isub[panc] = pan_int[panc]
    up_r = rng.uniform(2.5, 4.5) if rng.random() < 0.8 else rng.uniform(1.5, 2.5)  # duct dilated upstream
    duct = panc & (gland.dist < np.where(upstream, up_r, 1.2))
    curve, rad = centre.curve, centre.radius
    for _ in range(int(rng.integers(0, 4))):  # fluid-filled side-branch cysts (pancreas label)
        tc_ = rng.uniform(0.05, 0.95)
        if abs(tc_ - tumour.t0) < 0.15:
            continue
        ck = int(round(tc_ * (len(curve) - 1)))
        v = rng.normal(size=3)
        cc = curve[ck] + v / np.linalg.norm(v) * rad[ck] * rng.uniform(0.0, 0.5)
        duct |= panc & (ellipsoid(px, py, pz, cc, rng.uniform(2.5, 6.0, size=3)) < 1.0)
    isub[duct] = tab["duct"] * (1.0 + 0.1 * ptex[duct])
    return pan_base


def paint_tumour(c: Canvas, centre: Centreline, tumour: Tumour, pan_base: np.ndarray) -> None:
    """Mean = local pancreas base x (1 + contrast), a smooth texture of 1.5-2.5 mm; tumours over 22 mm
    have a necrotic core half the time (darker on Task 1, brighter on Task 2)."""
    g, rng, look = c.grid, c.rng, c.look
    ttex = ndimage.gaussian_filter(rng.standard_normal(pan_base.shape), g.sigma_vox(rng.uniform(1.5, 2.5)))
    ttex /= max(float(np.sqrt(np.mean(ttex * ttex))), 1e-9)
    t_int = pan_base * (1.0 + look.tumour_contrast) * (1.0 + look.tumour_texture * ttex)
    if tumour.diameter > 22 and rng.random() < 0.5:
        core = tumour.tf < rng.uniform(0.35, 0.55)
        t_int = np.where(core, t_int * (1.0 + (-0.15 if look.task == 1 else 0.25)), t_int)
    c.img[centre.box][tumour.mask] = t_int[tumour.mask]
