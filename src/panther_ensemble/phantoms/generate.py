"""One phantom: a pure function of (task, seed).

    rng = numpy Generator seeded from [task, seed]
    geometry   random voxel grid over the patient frame       (geometry.random_geometry)
    look       the task's intensities and this phantom's contrasts (imaging.draw_look)
    anatomy    body and organs painted in millimetres          (anatomy.paint_abdomen)
    imaging    blur, bias field, global scale, Rician noise     (imaging.acquire)

Float64 arithmetic throughout and one generator drawn in a fixed order, so the same call gives bit for
bit the same image, label and geometry on every machine.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import SimpleITK as sitk

from ..io import Geometry
from .anatomy import paint_abdomen
from .geometry import Grid, random_geometry
from .imaging import acquire, draw_look


class Phantom(NamedTuple):
    image: np.ndarray  # int16 >= 0, (z, y, x)
    label: np.ndarray  # uint8: 0 background, 1 tumour, 2 pancreas
    geometry: Geometry
    facts: dict  # task, seed, tumour diameter, lobes, in head, at edge, intensity scale


def make_phantom(task: int, seed: int, tumour_contrast_scale: float = 1.0) -> Phantom:
    """The phantom's arrays, geometry and tumour facts (see `generate_phantom`)."""
    rng = np.random.default_rng([int(task), int(seed)])
    geom, centre_world = random_geometry(task, rng)
    grid = Grid(geom, centre_world)
    look = draw_look(task, rng, tumour_contrast_scale)
    img, lab, facts = paint_abdomen(grid, look, rng)
    img, scale = acquire(img, grid, look, rng)
    facts = dict(task=int(task), seed=int(seed), **facts, intensity_scale=round(scale, 4))
    return Phantom(img, lab, geom, facts)


def to_image(arr: np.ndarray, geom: Geometry) -> sitk.Image:
    """A SimpleITK image of the (z, y, x) array with this geometry."""
    return geom.stamp(sitk.GetImageFromArray(arr))


def generate_phantom(task: int, seed: int, tumour_contrast_scale: float = 1.0) -> tuple[sitk.Image, sitk.Image]:
    """(image int16, label uint8 with 0 background, 1 tumour, 2 pancreas) for this task and seed.

    tumour_contrast_scale multiplies the tumour's mean contrast against the pancreas (1.0: the standard
    phantom; larger: an easier variant with the same anatomy, used only for curriculum pre-training).
    """
    ph = make_phantom(task, seed, tumour_contrast_scale)
    return to_image(ph.image, ph.geometry), to_image(ph.label, ph.geometry)
