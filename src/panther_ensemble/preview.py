"""Quick-look PNGs: three orthogonal slices through the tumour with the mask on the MRI.

`render_prediction` outlines a predicted mask; `render_comparison` fills true positives, false positives
and false negatives against a ground truth in three colours; `contact_sheet` tiles many previews.

The slices cross at the centroid of the largest tumour component, moved onto the component when it falls
outside it (the pancreas's when the tumour mask is empty and a pancreas map is given, else the image
centre). Slices are shown in the array's own voxel order, as the networks see
them (no reorientation): axial = one z plane (y down, x right); coronal and sagittal with z up. Each panel
is resampled (nearest neighbour) to one common pixel size in millimetres, so anisotropic voxels keep their
true aspect ratio, and pasted into the figure pixel for pixel (`Figure.figimage`): the returned
`PreviewLayout` says which voxel every PNG pixel shows. The grey window is the 1st to 99th percentile of
the image's nonzero voxels. Rendering uses matplotlib's object API only (no pyplot state), so it is safe
in a worker thread.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from scipy import ndimage

OUTLINE_RGB = (255, 40, 40)
TP_RGB, FP_RGB, FN_RGB = (0, 230, 0), (255, 30, 30), (40, 110, 255)
FILL_ALPHA = 0.5
PANEL_PX = 300  # longest side, in pixels, of the largest of the three panels
TITLE_PX, LABEL_PX, GAP_PX = 34, 18, 8
BACKGROUND = "#101010"
VIEWS = ("axial", "coronal", "sagittal")


@dataclass(frozen=True)
class Panel:
    """One view: where it sits in the PNG and which voxel each of its pixels shows."""

    view: str
    left: int  # PNG column of the panel's first pixel column
    top: int  # PNG row of the panel's first pixel row
    fixed_axis: int  # array axis (0 = z, 1 = y, 2 = x) held at the centre's index
    row_axis: int
    col_axis: int
    rows: np.ndarray  # voxel index along row_axis for each pixel row
    cols: np.ndarray  # voxel index along col_axis for each pixel column

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.rows), len(self.cols)

    def take(self, volume: np.ndarray, index: int) -> np.ndarray:
        """This panel's pixels from `volume` (z, y, x) with the slice at `index` along the fixed axis."""
        plane = np.take(volume, index, axis=self.fixed_axis)  # remaining axes keep their order
        if self.row_axis > self.col_axis:
            plane = plane.T
        return plane[np.ix_(self.rows, self.cols)]


@dataclass(frozen=True)
class PreviewLayout:
    path: Path
    centre: tuple[int, int, int]  # (z, y, x) voxel the three slices cross at
    centred_on: str  # "tumour", "pancreas" or "image centre"
    panels: tuple[Panel, ...]
    size: tuple[int, int]  # (width, height) in pixels


def slice_centre(target: np.ndarray, fallback: np.ndarray | None = None) -> tuple[tuple[int, int, int], str]:
    """The centre of `target` (a mask), else of `fallback` (e.g. the pancreas), else the array centre."""
    for mask, name in ((target, "tumour"), (fallback, "pancreas")):
        if mask is not None and np.any(mask):
            return _centre_of(np.asarray(mask) > 0), name
    return tuple(s // 2 for s in target.shape), "image centre"


def _centre_of(mask: np.ndarray) -> tuple[int, int, int]:
    """The centroid of the largest connected component, moved to the nearest voxel of that component when
    it falls outside it (a curved shape), so that all three slices cut through the structure."""
    labels, n = ndimage.label(mask)
    if n > 1:
        sizes = ndimage.sum_labels(mask, labels, range(1, n + 1))
        mask = labels == int(np.argmax(sizes)) + 1
    centroid = np.array(ndimage.center_of_mass(mask))
    voxel = np.round(centroid).astype(int)
    if not mask[tuple(voxel)]:
        points = np.argwhere(mask)
        voxel = points[np.argmin(((points - centroid) ** 2).sum(axis=1))]
    return tuple(int(v) for v in voxel)


def intensity_window(image: np.ndarray) -> tuple[float, float]:
    """1st and 99th percentile of the nonzero voxels (all voxels when none is nonzero)."""
    step = max(1, round((image.size / 2_000_000) ** (1 / 3)))
    sample = image[::step, ::step, ::step].ravel()
    nonzero = sample[sample != 0]
    lo, hi = np.percentile(nonzero if nonzero.size else sample, [1, 99])
    return float(lo), float(hi) if hi > lo else float(lo) + 1.0


def _axis_pixels(n_vox: int, spacing: float, mm_per_px: float, flip: bool) -> np.ndarray:
    """Voxel index per pixel: the axis' field of view split evenly into its pixels (each showing the voxel
    under its centre); the pixel count keeps the common scale `mm_per_px` to within half a pixel."""
    n_px = max(1, int(round(n_vox * spacing / mm_per_px)))
    index = np.minimum(((np.arange(n_px) + 0.5) * n_vox / n_px).astype(int), n_vox - 1)
    return index[::-1].copy() if flip else index


def layout_panels(shape_zyx: Sequence[int], spacing_zyx: Sequence[float], panel_px: int = PANEL_PX) -> list[Panel]:
    """The three panels side by side under a title band, at one common pixel size (mm)."""
    extents = [n * s for n, s in zip(shape_zyx, spacing_zyx)]
    mm_per_px = max(extents) / panel_px
    # (view, fixed axis, row axis, col axis, rows flipped so that z points up)
    specs = (("axial", 0, 1, 2, False), ("coronal", 1, 0, 2, True), ("sagittal", 2, 0, 1, True))
    panels, left = [], GAP_PX
    for view, fixed, r, c, flip in specs:
        rows = _axis_pixels(shape_zyx[r], spacing_zyx[r], mm_per_px, flip)
        cols = _axis_pixels(shape_zyx[c], spacing_zyx[c], mm_per_px, False)
        panels.append(Panel(view, left, TITLE_PX, fixed, r, c, rows, cols))
        left += len(cols) + GAP_PX
    return panels


def _grey(plane: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    lo, hi = window
    g = np.clip((plane.astype(np.float32) - lo) / (hi - lo), 0, 1)
    return np.repeat((g * 255).astype(np.uint8)[..., None], 3, axis=2)


def outline(mask_px: np.ndarray) -> np.ndarray:
    """The mask's inner boundary at display resolution: mask pixels with a 4-neighbour outside it."""
    mask_px = mask_px.astype(bool)
    return mask_px & ~ndimage.binary_erosion(mask_px, structure=ndimage.generate_binary_structure(2, 1),
                                             border_value=0)


def _blend(rgb: np.ndarray, where: np.ndarray, colour: Sequence[int]) -> None:
    mixed = (1 - FILL_ALPHA) * rgb[where].astype(np.float32) + FILL_ALPHA * np.asarray(colour, np.float32)
    rgb[where] = np.round(mixed).astype(np.uint8)


def _save(panels: list[Panel], pictures: list[np.ndarray], title: str, path: Path) -> tuple[int, int]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    width = panels[-1].left + panels[-1].shape[1] + GAP_PX
    height = TITLE_PX + max(p.shape[0] for p in panels) + LABEL_PX
    dpi = 100
    fig = Figure(figsize=(width / dpi, height / dpi), dpi=dpi, facecolor=BACKGROUND)
    FigureCanvasAgg(fig)
    for panel, picture in zip(panels, pictures):
        # figimage offsets count from the bottom-left corner; origin="upper" puts row 0 at the top
        fig.figimage(picture, xo=panel.left, yo=height - panel.top - panel.shape[0], origin="upper")
        fig.text((panel.left + 2) / width, 3 / height, panel.view, color="#c0c0c0", fontsize=8, va="bottom")
    fig.text(GAP_PX / width, 1 - 4 / height, title, color="white", fontsize=8, va="top", family="monospace")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.partial-{os.getpid()}.png")
    fig.savefig(tmp, dpi=dpi, facecolor=BACKGROUND)
    os.replace(tmp, path)
    return width, height


def render_prediction(image: np.ndarray, mask: np.ndarray, spacing_zyx: Sequence[float], path: Path | str, *,
                      pancreas: np.ndarray | None = None, title: str = "") -> PreviewLayout:
    """`path` (PNG): the MRI with the predicted mask outlined, three slices through the tumour's centre."""
    centre, centred_on = slice_centre(mask, pancreas)
    window = intensity_window(image)
    panels = layout_panels(image.shape, spacing_zyx)
    pictures = []
    for p in panels:
        rgb = _grey(p.take(image, centre[p.fixed_axis]), window)
        rgb[outline(p.take(mask, centre[p.fixed_axis]) > 0)] = OUTLINE_RGB
        pictures.append(rgb)
    heading = f"{title}   centre (z, y, x) {centre} on the {centred_on}   window {window[0]:.4g}..{window[1]:.4g}"
    size = _save(panels, pictures, heading.strip(), Path(path))
    return PreviewLayout(Path(path), centre, centred_on, tuple(panels), size)


def render_comparison(image: np.ndarray, prediction: np.ndarray, truth: np.ndarray, spacing_zyx: Sequence[float],
                      path: Path | str, *, pancreas: np.ndarray | None = None, title: str = "") -> PreviewLayout:
    """`path` (PNG): true positives green, false positives red, false negatives blue (half-transparent fills)
    on the MRI, through the centre of the true tumour (else of the predicted one, else the pancreas)."""
    pred, gt = prediction > 0, truth > 0
    centre, centred_on = slice_centre(gt if gt.any() else pred, pancreas)
    window = intensity_window(image)
    panels = layout_panels(image.shape, spacing_zyx)
    pictures = []
    for p in panels:
        i = centre[p.fixed_axis]
        rgb = _grey(p.take(image, i), window)
        pp, gg = p.take(pred, i), p.take(gt, i)
        for region, colour in ((pp & gg, TP_RGB), (pp & ~gg, FP_RGB), (~pp & gg, FN_RGB)):
            _blend(rgb, region, colour)
        pictures.append(rgb)
    heading = f"{title}   TP green  FP red  FN blue   centre (z, y, x) {centre} on the {centred_on}"
    size = _save(panels, pictures, heading.strip(), Path(path))
    return PreviewLayout(Path(path), centre, centred_on, tuple(panels), size)


def contact_sheet(entries: Sequence[tuple[str, Path]], path: Path | str, columns: int = 3,
                  per_page: int = 36) -> list[Path]:
    """Tile the previews (caption, PNG) into `path` (and path-2.png, ... beyond `per_page`). Returns the pages."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.image import imread

    path = Path(path)
    pages = []
    for start in range(0, len(entries), per_page):
        chunk = entries[start:start + per_page]
        rows = math.ceil(len(chunk) / columns)
        fig = Figure(figsize=(4.2 * columns, 1.9 * rows + 0.2), dpi=100, facecolor=BACKGROUND)
        FigureCanvasAgg(fig)
        for k, (caption, png) in enumerate(chunk):
            ax = fig.add_subplot(rows, columns, k + 1)
            ax.imshow(imread(str(png)), interpolation="antialiased")
            ax.set_title(caption, color="white", fontsize=7)
            ax.set_axis_off()
        fig.subplots_adjust(left=0.01, right=0.99, top=1 - 0.25 / (1.9 * rows + 0.2), bottom=0.01,
                            wspace=0.03, hspace=0.2)
        page = path if start == 0 else path.with_name(f"{path.stem}-{start // per_page + 1}{path.suffix}")
        tmp = page.with_name(f".{page.stem}.partial-{os.getpid()}.png")
        page.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(tmp, dpi=100, facecolor=BACKGROUND)
        os.replace(tmp, page)
        pages.append(page)
    return pages


def comparison_previews(pred_dir: Path, gt_dir: Path, images_dir: Path, out_dir: Path,
                        metrics: dict[str, dict] | None = None) -> list[Path]:
    """`out_dir/<case>.png` for every ground-truth case (a missing prediction shows as empty) and the contact
    sheet. The MRI of case `c` is `images_dir/c.*` or nnU-Net's `images_dir/c_0000.*`."""
    from .errors import InputError
    from .io import read_image, read_labels, scan_images
    from .scoring.metrics import binarise_prediction, tumour_mask

    images, truths, preds = scan_images(images_dir), scan_images(gt_dir), scan_images(pred_dir)
    entries = []
    for cid, gt_path in truths.items():
        image_path = images.get(cid) or images.get(f"{cid}_0000")
        if image_path is None:
            raise InputError(images_dir, f"no image for ground-truth case {cid!r} ({cid}.* or {cid}_0000.*)")
        image, geometry = read_image(image_path)
        truth, _ = read_labels(gt_path)
        prediction = read_labels(preds[cid])[0] if cid in preds else np.zeros(truth.shape, np.uint8)
        if truth.shape != image.shape or prediction.shape != image.shape:
            raise InputError(gt_path, f"shape {truth.shape} / prediction {prediction.shape} differ from the image's "
                                      f"{image.shape} ({image_path})")
        dice = (metrics or {}).get(cid, {}).get("dice")
        title = cid + ("" if dice is None else f"  Dice {dice:.3f}")
        path = Path(out_dir) / f"{cid}.png"
        render_comparison(image, binarise_prediction(prediction, preds.get(cid, "missing prediction")), tumour_mask(truth, gt_path),
                          geometry.spacing_zyx, path, pancreas=truth == 2, title=title)
        entries.append((title, path))
    return contact_sheet(entries, Path(out_dir) / "contact_sheet.png") if entries else []
