"""Check one container run's output the way the platform would, and against the expected mask.

usage: check_output.py INPUT_IMAGE OUTPUT_DIR EXPECTED_MASK [--min-agreement 0.999]
Exit 0 when: exactly one .mha in OUTPUT_DIR/images/pancreatic-tumor-segmentation, uint8, values in {0, 1},
the input's size/spacing/origin/direction, and voxel agreement with EXPECTED_MASK >= the minimum.
"""

import argparse
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("input_image", type=Path)
    p.add_argument("output_dir", type=Path)
    p.add_argument("expected", type=Path)
    p.add_argument("--min-agreement", type=float, default=0.999)
    a = p.parse_args()
    socket = a.output_dir / "images" / "pancreatic-tumor-segmentation"
    found = sorted(socket.iterdir()) if socket.is_dir() else []
    problems = []
    if len(found) != 1 or found[0].suffix != ".mha":
        print(f"FAIL: expected exactly one .mha in {socket}, found {[f.name for f in found]}")
        return 1
    out, inp, exp = (sitk.ReadImage(str(x)) for x in (found[0], a.input_image, a.expected))
    if found[0].name != a.input_image.name:
        problems.append(f"output name {found[0].name} != input name {a.input_image.name}")
    if out.GetPixelID() != sitk.sitkUInt8:
        problems.append(f"pixel type {out.GetPixelIDTypeAsString()}, expected 8-bit unsigned")
    values = set(np.unique(sitk.GetArrayViewFromImage(out)).tolist())
    if not values <= {0, 1}:
        problems.append(f"values {sorted(values)} not in {{0, 1}}")
    if out.GetSize() != inp.GetSize():
        problems.append(f"size {out.GetSize()} != input {inp.GetSize()}")
    for what in ("Spacing", "Origin", "Direction"):
        got, want = getattr(out, f"Get{what}")(), getattr(inp, f"Get{what}")()
        if not np.allclose(got, want, rtol=0, atol=1e-6):
            problems.append(f"{what.lower()} {got} != input {want}")
    agreement = 0.0
    if not problems:
        agreement = float((sitk.GetArrayViewFromImage(out) == sitk.GetArrayViewFromImage(exp)).mean())
        if agreement < a.min_agreement:
            problems.append(f"voxel agreement with {a.expected.name} {agreement:.6f} < {a.min_agreement}")
    tumour = int(np.count_nonzero(sitk.GetArrayViewFromImage(out)))
    if problems:
        print("FAIL: " + "; ".join(problems))
        return 1
    print(f"OK: {found[0].name}: uint8 {{0,1}}, geometry = input, {tumour} tumour voxels, "
          f"agreement with expected {agreement:.6f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
