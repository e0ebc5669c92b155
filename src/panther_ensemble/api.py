"""The public API: an ensemble loaded once from a spec and a weights root, then `segment` any number of images.

    from panther_ensemble import Ensemble

    ensemble = Ensemble.for_task(1)                      # the shipped Task 1 spec and weights
    result = ensemble.segment("scan.mha")                # or a SimpleITK image, or (array, Geometry)
    result.save("mask.mha")                              # uint8 0/1 mask with the input's geometry
    result.tumour_volume_mm3, result.timings             # and result.probabilities with probabilities=True

The container entry point, `panther-ensemble predict`, the benchmarks and the training scripts all go
through this class.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from .errors import InputError, memory_errors_as
from .io import Geometry, read_image, write_mask
from .spec import EnsembleSpec, load_spec, parse_spec

log = logging.getLogger(__name__)

PLATFORM_MODEL_DIR = Path("/opt/ml/model")  # where grand-challenge unpacks an uploaded model tarball


@dataclass
class Segmentation:
    """One case's result."""

    mask: np.ndarray  # uint8 (z, y, x), values 0/1
    geometry: Geometry
    labels: tuple[str, ...]
    probabilities: Any = None  # torch.Tensor (labels, z, y, x) float32, when asked for
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage, and "total"
    members_used: tuple[str, ...] = ()
    mirroring_dropped: tuple[str, ...] = ()
    members_dropped: tuple[str, ...] = ()

    @property
    def tumour_voxels(self) -> int:
        return int(np.count_nonzero(self.mask))

    @property
    def tumour_volume_mm3(self) -> float:
        return self.tumour_voxels * self.geometry.voxel_volume_mm3

    def save(self, path: Path | str) -> Path:
        """Write the mask with the input's geometry (atomically)."""
        return write_mask(self.mask, self.geometry, path)


MemberCallback = Callable[[str, Any, tuple], None]  # (member name, probabilities on the image grid, labels)


class Ensemble:
    """A validated spec, its model folders and a runtime; networks are loaded on first use and kept."""

    def __init__(self, spec: EnsembleSpec, weights_root: Path | str, device: str = "auto",
                 threads: int | None = None, forward: Any = None):
        """`forward`: how the networks' forward passes run (runtime.ForwardSettings or its text form, e.g.
        "channels_last,tiles=2"); None: $PANTHER_FORWARD, else the measured defaults."""
        from .inference.engine import Engine  # torch and the networks: only when an ensemble is made
        from .runtime import Runtime

        self.spec = spec
        self.weights_root = Path(weights_root)
        self.runtime = Runtime.create(device, threads, forward)
        self.runtime.configure_torch()
        self._engine = Engine(spec, self.weights_root, self.runtime)  # checks every model folder now

    @classmethod
    def from_spec(cls, spec: EnsembleSpec | Mapping[str, Any] | str | Path, weights_root: Path | str,
                  device: str = "auto", threads: int | None = None, forward: Any = None) -> "Ensemble":
        """`spec`: an EnsembleSpec, its JSON as a dict, or a path to the JSON file."""
        if isinstance(spec, EnsembleSpec):
            parsed = spec
        elif isinstance(spec, Mapping):
            parsed = parse_spec(dict(spec), "<spec>")
        else:
            parsed = load_spec(spec)
        return cls(parsed, weights_root, device, threads, forward)

    @classmethod
    def for_task(cls, task: int, weights_root: Path | str | None = None, device: str = "auto",
                 app_root: Path | str | None = None, threads: int | None = None, forward: Any = None) -> "Ensemble":
        """The shipped ensemble of a task: resources/task<N>.json and the default weights root."""
        spec_path, default_root = default_paths(task, app_root)
        return cls.from_spec(spec_path, weights_root or default_root, device, threads, forward)

    @property
    def device(self):
        return self.runtime.device

    @property
    def labels(self) -> tuple[str, ...]:
        return self._engine.labels

    def load(self) -> "Ensemble":
        """Build every fold's network now (otherwise the first `segment` does)."""
        self._engine.load()
        return self

    @property
    def networks(self) -> dict[str, list]:
        """Each member's fold networks (torch modules, loaded on first access): for benchmarks and profiling."""
        self._engine.load()
        return {m.name: list(m.networks) for m in self._engine.members}

    def preprocess_plans(self) -> dict[str, Any]:
        """{member name: PreprocessPlan} of the members that run (weight > 0); loads the networks on first use."""
        self._engine.load()
        return {m.name: m.preprocess_plan for m in self._engine.members if m.spec.weight > 0}

    def member_labels(self) -> dict[str, tuple[str, ...]]:
        """{member name: its label names} of the members that run (weight > 0); loads the networks on first use."""
        self._engine.load()
        return {m.name: tuple(m.label_names) for m in self._engine.members if m.spec.weight > 0}

    def costs(self, image) -> list:
        """Per member, for this image (same inputs as `segment`): FLOPs and activation memory of one forward
        call, tiles, folds, mirrored copies and FLOPs of the whole case (inference.forward_cost.MemberCost;
        `.as_dict()` for reports). Counted on the meta device: no forward pass runs."""
        array, geometry = _as_array(image)
        return self._engine.member_costs(array, geometry.spacing_zyx)

    def segment(self, image, *, probabilities: bool = False, on_member: MemberCallback | None = None,
                name: str | Path | None = None) -> Segmentation:
        """Segment one image: a file path, a SimpleITK image, or an (array (z, y, x), Geometry) pair.

        probabilities: keep the ensemble's probability map (labels, z, y, x) in the result.
        on_member: called with each member's probability map on the image grid as it is computed.
        name: what error messages call the image (default: its path, else "<image>").

        Before any network runs, `preflight.check_case` checks every member's network grid (`check_grids`: an
        InputError for a spacing that gives an empty or a huge grid), whether the case fits in memory on the
        CPU (`check_case_memory`: an `OutOfMemory`), and the voxel values (`check_intensities`: none so large
        that a member's normalisation overflows). Running out
        of memory, after the runtime's fallbacks, raises `OutOfMemory` (a MemoryError) saying so in one line.
        Logs one closing line: the total time and the tumour volume.
        """
        from .preflight import check_case
        from .runtime import duration_text, peak_gpu_mb, peak_rss_mb

        started = time.perf_counter()
        array, geometry = _as_array(image)
        where = name if name is not None else image if isinstance(image, (str, Path)) else "<image>"
        with memory_errors_as(f"loading the networks on {self.device}"):
            self._engine.load()
        check_case(self, geometry, array, where)
        shape = " x ".join(str(s) for s in geometry.size_xyz)
        called = Path(where).name if where != "<image>" else "the image"
        with memory_errors_as(f"segmenting {called} ({shape} voxels, on {self.device})"):
            result = self._engine.predict(array, geometry, keep_probabilities=probabilities, member_hook=on_member)
        timings = dict(result.stages.seconds)
        timings["total"] = time.perf_counter() - started
        segmentation = Segmentation(result.mask, geometry, result.labels, result.probabilities, timings,
                                    result.members_used, result.mirroring_dropped, result.members_dropped)
        gpu = peak_gpu_mb(self.device)
        log.info("case done in %s: tumour %d voxels, %.0f mm3 (%d of %d members ran; peak RSS %.0f MB%s)",
                 duration_text(timings["total"]), segmentation.tumour_voxels, segmentation.tumour_volume_mm3,
                 len(result.members_used), len(self.spec.members), peak_rss_mb(),
                 f", peak GPU {gpu:.0f} MB" if gpu is not None else "")
        return segmentation


def _as_array(image) -> tuple[np.ndarray, Geometry]:
    if isinstance(image, (str, Path)):
        return read_image(image)
    if isinstance(image, tuple) and len(image) == 2 and isinstance(image[1], Geometry):
        array = np.asarray(image[0], dtype=np.float32)
        if array.shape != image[1].shape_zyx:
            raise InputError("<array>", f"array shape {array.shape} does not match the geometry's {image[1].shape_zyx}")
        return array, image[1]
    import SimpleITK as sitk

    if isinstance(image, sitk.Image):
        if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
            raise InputError("<image>", "expected a 3D scalar image")
        return sitk.GetArrayFromImage(image).astype(np.float32, copy=False), Geometry.of(image)
    raise TypeError(f"segment() takes a path, a SimpleITK image or (array, Geometry), not {type(image).__name__}")


def locate_app_root(app_root: Path | str | None = None) -> Path:
    """Where resources/ and model_weights/ are: the argument, $PANTHER_APP_ROOT, the source checkout this
    package runs from, or the working directory, whichever first holds resources/task1.json."""
    candidates = [app_root, os.environ.get("PANTHER_APP_ROOT"), Path(__file__).resolve().parents[2], Path.cwd()]
    for c in candidates:
        if c is not None and (Path(c) / "resources" / "task1.json").is_file():
            return Path(c)
    if app_root is not None:
        return Path(app_root)
    raise InputError("resources/task1.json", "cannot find the shipped specs: set PANTHER_APP_ROOT to the folder "
                                             "that holds resources/ and model_weights/, or pass --spec and --model-dir")


def default_weights_root(app_root: Path) -> Path:
    """/opt/ml/model when the platform unpacked a model tarball there, else the app's model_weights/."""
    if PLATFORM_MODEL_DIR.is_dir() and any(PLATFORM_MODEL_DIR.iterdir()):
        return PLATFORM_MODEL_DIR
    return Path(app_root) / "model_weights"


def default_paths(task: int, app_root: Path | str | None = None) -> tuple[Path, Path]:
    """(spec path, weights root) of the shipped ensemble of `task`."""
    if task not in (1, 2):
        raise InputError("--task", f"must be 1 or 2, got {task!r}")
    root = locate_app_root(app_root)
    return root / "resources" / f"task{task}.json", default_weights_root(root)
