"""Metric-aware weighted ensembles of nnU-Net v2 specialists for pancreatic tumour segmentation in MRI.

The public API (imported on first use, so `import panther_ensemble` stays cheap):

- `Ensemble` (`Ensemble.for_task(1)`, `Ensemble.from_spec(spec, weights_root)`), `.segment(image)` ->
  `Segmentation` (mask, geometry, probabilities on request, timings; `.save(path)`)
- `load_spec`, `EnsembleSpec`: the versioned ensemble spec; `read_image`, `write_mask`, `Geometry`: I/O
- `InputError`: the one exception for bad input (one line, names the file)

The package, by job: `inference/` runs an ensemble (one module per stage), `scoring/` scores and fits,
`phantoms/` makes synthetic cases, `batch/` runs many cases (shards, resume, summary), `cli/` is the
command line, `io/` the one image I/O package, `runtime.py` every device and memory decision.
"""

from __future__ import annotations

from importlib import import_module

from .errors import InputError

try:
    from importlib.metadata import version as _version

    __version__ = _version("panther-ensemble")
except Exception:  # noqa: BLE001 - running from a source tree that is not installed
    __version__ = "0+unknown"

_LAZY = {
    "Ensemble": ".api", "Segmentation": ".api",
    "load_spec": ".spec", "parse_spec": ".spec", "EnsembleSpec": ".spec",
    "read_image": ".io", "write_mask": ".io", "Geometry": ".io",
}

__all__ = ["InputError", "__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module 'panther_ensemble' has no attribute {name!r}")
