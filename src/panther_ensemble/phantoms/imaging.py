"""How a phantom looks: the task's tissue intensities and contrasts, and the imaging chain.

Task 1 looks like a fat-saturated T1 arterial-phase scan (bright aorta and renal cortex, the enhancing
pancreas the brightest parenchyma, the tumour hypo-intense); Task 2 like a T2-weighted MR-Linac scan
(bright fluid, dark vessels, the tumour hyper-intense, coarser and noisier).  Intensities are in
arbitrary units with the pancreas at 100 (Task 1) or 80 (Task 2) before the random global scale.

The imaging chain turns the painted float64 anatomy into a stored scan: partial-volume blur, a smooth
multiplicative bias field, a random global scale, Rician noise, then int16 (>= 0).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .geometry import Grid, field, waves

PHANTOM_VERSION = 2
"""Version 2 (2026-12): the tumour is a visible lesion, as on clinical scans.  Version 1 drew a Task 1
tumour whose mean contrast (5-13 %) was below its own texture (18-26 %) plus noise, which no small network
learned in CPU hours; anatomy, sizes, locations, geometry and the order of the random draws are unchanged,
so a seed gives the same anatomy and tumour shape in both versions."""

# mean tissue intensities (arbitrary units) before the per-phantom variation of +-8 %
T1_TISSUES = dict(air=0.0, subcut_fat=38.0, fat=34.0, muscle=48.0, liver=78.0, spleen=88.0, kid_cortex=135.0,
                  kid_medulla=62.0, stomach_wall=95.0, stomach_content=22.0, bowel_wall=92.0, bowel_content=30.0,
                  gas=4.0, vertebra=58.0, csf=18.0, aorta=210.0, ivc=58.0, portal=105.0, pancreas=100.0, duct=30.0)
T2_TISSUES = dict(air=0.0, subcut_fat=120.0, fat=110.0, muscle=38.0, liver=55.0, spleen=105.0, kid_cortex=115.0,
                  kid_medulla=135.0, stomach_wall=60.0, stomach_content=210.0, bowel_wall=65.0, bowel_content=190.0,
                  gas=5.0, vertebra=70.0, csf=240.0, aorta=18.0, ivc=22.0, portal=25.0, pancreas=80.0, duct=230.0)
PANCREAS = {1: 100.0, 2: 80.0}  # the reference intensity: the pancreas is not varied


@dataclass
class Look:
    """One phantom's intensities and imaging parameters (drawn by `draw_look`).

    Contrasts, textures, gradient and noise are fractions of the local pancreas intensity.
    """

    task: int
    tissue: dict[str, float]  # mean intensity per tissue
    tumour_contrast: float  # tumour mean relative to the local pancreas (negative: hypo-intense)
    tumour_texture: float  # std of the tumour's smooth texture
    pancreas_texture: float  # std of the pancreas's smooth texture
    pancreas_gradient: float  # intensity change from head to tail
    noise: float  # Rician sigma
    blur_vox: tuple[float, float, float]  # partial-volume blur sigma (z, y, x), voxels
    bias: float  # amplitude of the log bias field


def draw_look(task: int, rng: np.random.Generator, tumour_contrast_scale: float = 1.0) -> Look:
    """The task's look with this phantom's random contrasts and a +-8 % variation of every tissue.

    tumour_contrast_scale multiplies the tumour's mean contrast (an easier variant for curriculum
    pre-training; every random draw stays the same).
    """
    if task == 1:
        # arterial-phase T1: the enhancing pancreas is the brightest parenchyma, PDAC a hypo-enhancing mass
        look = Look(task=1, tissue=dict(T1_TISSUES),
                    tumour_contrast=rng.uniform(-0.45, -0.25),
                    tumour_texture=rng.uniform(0.06, 0.12),
                    pancreas_texture=rng.uniform(0.04, 0.07),
                    pancreas_gradient=rng.uniform(0.08, 0.18),
                    noise=rng.uniform(0.04, 0.07),
                    blur_vox=(0.35, 0.5, 0.5),
                    bias=rng.uniform(0.12, 0.25))
    elif task == 2:
        # MR-Linac T2: mildly hyper-intense tumour against a darker pancreas, lower SNR, softer effective
        # resolution (blur of about 1 mm in-plane)
        look = Look(task=2, tissue=dict(T2_TISSUES),
                    tumour_contrast=rng.uniform(0.18, 0.35),
                    tumour_texture=rng.uniform(0.07, 0.12),
                    pancreas_texture=rng.uniform(0.05, 0.08),
                    pancreas_gradient=rng.uniform(0.08, 0.16),
                    noise=rng.uniform(0.08, 0.12),
                    blur_vox=(0.6, 1.0, 1.0),
                    bias=rng.uniform(0.15, 0.3))
    else:
        raise ValueError(f"task must be 1 or 2, got {task!r}")
    if tumour_contrast_scale != 1.0:
        look.tumour_contrast *= float(tumour_contrast_scale)
    for k in list(look.tissue):  # per-phantom tissue variation
        look.tissue[k] *= rng.uniform(0.92, 1.08)
    look.tissue["pancreas"] = PANCREAS[task]
    return look


def acquire(img: np.ndarray, grid: Grid, look: Look, rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """The imaging chain on the painted anatomy: (int16 image, the random global intensity scale)."""
    img = ndimage.gaussian_filter(img, look.blur_vox, mode="nearest")  # partial volume
    img *= np.exp(look.bias * field(waves(rng, 3, 350, 700), grid.x, grid.y, grid.z))  # bias field
    scale = float(np.exp(rng.uniform(np.log(0.6), np.log(6.0))))
    sigma = look.noise * look.tissue["pancreas"]
    img = np.sqrt((img + rng.normal(0.0, sigma, img.shape)) ** 2 + rng.normal(0.0, sigma, img.shape) ** 2) * scale
    return np.clip(np.rint(img), 0, 32767).astype(np.int16), scale
