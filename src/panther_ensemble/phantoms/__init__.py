"""Synthetic abdominal MRI phantoms that stand in for PANTHER data (no real scan can be shipped).

A phantom is a pure function of (task, seed) (`generate.make_phantom`):

- geometry.py  a random voxel grid (`io.Geometry`: size, spacing, origin, direction; 1 in 4 rotated or
               flipped) over a patient frame in millimetres, and the shape helpers drawn in that frame;
- imaging.py   the task's look (Task 1: fat-saturated T1 arterial phase, tumour hypo-intense; Task 2:
               T2 MR-Linac, tumour hyper-intense) and the imaging chain (blur, bias field, global scale,
               Rician noise, int16);
- anatomy.py   the abdomen painted structure by structure: body wall, spine, bowel, liver, spleen,
               kidneys, stomach, vessels, duodenum, pancreas with duct and cysts, and the tumour
               (label 1) in or at the edge of the pancreas (label 2);
- generate.py  the recipe: geometry -> look -> anatomy -> imaging;
- datasets.py  nnU-Net v2 raw datasets, grand-challenge socket cases, facts, uuids;
- baseline.py  intensity-threshold baselines (is the task non-trivial?).

Command line: ``panther-ensemble phantom {socket,dataset,baseline,info} ...`` (panther_ensemble.cli.phantom).
"""

from .baseline import threshold_baselines
from .datasets import (LABELS, SLUGS, case_uuid, format_seeds, parse_seeds, phantom_info, write_nnunet_dataset,
                       write_socket_case)
from .generate import Phantom, generate_phantom, make_phantom, to_image
from .imaging import PHANTOM_VERSION

__all__ = [
    "LABELS", "PHANTOM_VERSION", "SLUGS", "Phantom", "case_uuid", "format_seeds", "generate_phantom",
    "make_phantom", "parse_seeds", "phantom_info", "threshold_baselines", "to_image", "write_nnunet_dataset",
    "write_socket_case",
]
