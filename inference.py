"""grand-challenge entry point: PANTHER pancreatic tumour segmentation (Task 1 T1 MRI, Task 2 T2 MR-Linac).

Reads the one image in /input/images/abdominal-t{1,2}-mri/, runs that task's nnU-Net ensemble
(resources/task<N>.json) and writes /output/images/pancreatic-tumor-segmentation/<name>.mha.
All logic lives in the panther_ensemble package; `python inference.py --help` lists the options.
"""

import sys
from pathlib import Path

from panther_ensemble.cli.container import main

if __name__ == "__main__":
    sys.exit(main(app_root=Path(__file__).resolve().parent))
