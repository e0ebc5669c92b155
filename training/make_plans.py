"""Cut nnU-Net's default plans down to a CPU-sized plans file and write two-fold splits.

Usage: python training/make_plans.py DATASET_ID SPACING_Z SPACING_Y SPACING_X [--features 8,16,32,64]
       [--patch 32,96,96] [--plans-name nnUNetPlansPhantom] [--batch-size 2]

Reads $nnUNet_preprocessed/DatasetXXX_*/nnUNetPlans.json (from nnUNetv2_plan_experiment), writes
<plans-name>.json next to it with one configuration, 3d_fullres: the given target spacing, patch,
batch size and a small PlainConvUNet (3x3x3 kernels, strides 1,(1,2,2),2,2,...), and writes
splits_final.json with two folds (first half / second half of the sorted case names) unless
--no-splits.  Preprocessed data depends only on the spacing: run nnUNetv2_preprocess -plans_name
<plans-name> afterwards.
"""

import argparse
import copy
import json
import os
from pathlib import Path

from splits import two_fold_splits  # training/, the script's own folder


def dataset_folder(dataset_id: int) -> Path:
    base = Path(os.environ["nnUNet_preprocessed"])
    hits = sorted(base.glob(f"Dataset{dataset_id:03d}_*"))
    if len(hits) != 1:
        raise SystemExit(f"expected one Dataset{dataset_id:03d}_* under {base}, found {hits}")
    return hits[0]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("dataset_id", type=int)
    ap.add_argument("spacing", type=float, nargs=3, help="target spacing z y x (mm)")
    ap.add_argument("--features", default="8,16,32,64")
    ap.add_argument("--patch", default="24,80,80")
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--plans-name", default="nnUNetPlansPhantom")
    ap.add_argument("--no-splits", action="store_true")
    a = ap.parse_args()

    folder = dataset_folder(a.dataset_id)
    plans = json.loads((folder / "nnUNetPlans.json").read_text())
    feats = [int(v) for v in a.features.split(",")]
    patch = [int(v) for v in a.patch.split(",")]
    n = len(feats)
    strides = [[1, 1, 1], [1, 2, 2]] + [[2, 2, 2]] * (n - 2)
    stock = plans["configurations"]["3d_fullres"]
    cfg = copy.deepcopy(stock)
    assert plans["transpose_forward"] == [0, 1, 2], plans["transpose_forward"]
    old_sp, old_shape = stock["spacing"], stock["median_image_size_in_voxels"]
    cfg.update(
        data_identifier=f"{a.plans_name}_3d_fullres",
        batch_size=a.batch_size,
        patch_size=patch,
        spacing=list(a.spacing),
        median_image_size_in_voxels=[round(s * o / t) for s, o, t in zip(old_shape, old_sp, a.spacing)],
    )
    arch = cfg["architecture"]
    assert arch["network_class_name"].endswith("PlainConvUNet"), arch["network_class_name"]
    kw = arch["arch_kwargs"]
    kw.update(n_stages=n, features_per_stage=feats, kernel_sizes=[[3, 3, 3]] * n, strides=strides,
              n_conv_per_stage=[2] * n, n_conv_per_stage_decoder=[2] * (n - 1))
    # data and segmentation keep nnU-Net's default skimage resampling (the preprocessed data is stock);
    # the export of probabilities uses nnU-Net's torch resampling (as its *_torchres planners do), which is
    # 10-100x faster on the CPU: out-of-fold validation and reference predictions then take seconds a case
    cfg["resampling_fn_probabilities"] = "resample_torch_fornnunet"
    cfg["resampling_fn_probabilities_kwargs"] = {"is_seg": False, "force_separate_z": False,
                                                 "memefficient_seg_resampling": False}
    new = copy.deepcopy(plans)
    new["plans_name"] = a.plans_name
    new["configurations"] = {"3d_fullres": cfg}
    out = folder / f"{a.plans_name}.json"
    out.write_text(json.dumps(new, indent=4) + "\n")
    print(f"wrote {out}")

    if not a.no_splits:
        splits = two_fold_splits(Path(os.environ["nnUNet_raw"]) / folder.name)
        (folder / "splits_final.json").write_text(json.dumps(splits, indent=2) + "\n")
        a_, b_ = splits[0]["val"], splits[1]["val"]
        print(f"wrote {folder / 'splits_final.json'}: fold 0 val {a_[0]}..{a_[-1]}, fold 1 val {b_[0]}..{b_[-1]}")


if __name__ == "__main__":
    main()
