"""A tiny nnU-Net dataset that real nnU-Net code preprocesses and trains on in seconds (tests of the training
scripts: train_specialist.py, seed_from_shipped.py)."""

from __future__ import annotations

import json
import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "tests" / "data" / "real_trainer_model" / "nnUNetTrainerPhantom__nnUNetPlansTiny__3d_fullres"


def tiny_dataset(tmp_path: Path, n_cases: int = 4) -> dict:
    """Dataset901 of n small labelled MRIs preprocessed by nnU-Net's own DefaultPreprocessor under the tiny plans
    (spacing 3 x 2 x 2 mm, patch 16 x 32 x 32), fold 0 = the first half for training; the environment to train it."""
    import numpy as np
    import SimpleITK as sitk
    from nnunetv2.preprocessing.preprocessors.default_preprocessor import DefaultPreprocessor
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    data = tmp_path / "data"
    raw = data / "nnUNet_raw" / "Dataset901_PhantomT1"
    pre = data / "nnUNet_preprocessed" / "Dataset901_PhantomT1"
    (raw / "imagesTr").mkdir(parents=True)
    (raw / "labelsTr").mkdir()
    pre.mkdir(parents=True)
    dataset_json = json.loads((TINY / "dataset.json").read_text())
    dataset_json["numTraining"] = n_cases
    plans = json.loads((TINY / "plans.json").read_text())
    for path in (raw / "dataset.json", pre / "dataset.json"):
        path.write_text(json.dumps(dataset_json))
    (pre / "nnUNetPlansTiny.json").write_text(json.dumps(plans))
    manager = PlansManager(plans)
    config = manager.get_configuration("3d_fullres")
    out = pre / config.data_identifier
    out.mkdir()
    rng = np.random.default_rng(0)
    zz, yy, xx = np.mgrid[:20, :40, :40]
    names = []
    for i in range(n_cases):
        name = f"tiny_{i:03d}"
        cy, cx = 20 + i, 18 + 2 * i
        pancreas = ((yy - cy) / 9.0) ** 2 + ((xx - cx) / 12.0) ** 2 + ((zz - 10) / 5.0) ** 2 <= 1
        tumour = ((yy - cy) / 4.0) ** 2 + ((xx - cx - 4) / 4.0) ** 2 + ((zz - 10) / 3.0) ** 2 <= 1
        label = np.where(tumour, 1, np.where(pancreas, 2, 0)).astype(np.uint8)
        image = (100 + 60 * pancreas - 40 * tumour + rng.normal(0, 8, label.shape)).astype(np.float32)
        for array, path in ((image, raw / "imagesTr" / f"{name}_0000.mha"), (label, raw / "labelsTr" / f"{name}.mha")):
            im = sitk.GetImageFromArray(array)
            im.SetSpacing((2.0, 2.0, 3.0))
            sitk.WriteImage(im, str(path))
        DefaultPreprocessor(verbose=False).run_case_save(
            str(out / name), [str(raw / "imagesTr" / f"{name}_0000.mha")], str(raw / "labelsTr" / f"{name}.mha"),
            manager, config, dataset_json)
        names.append(name)
    # the trainer only copies the fingerprint into its output folder
    (pre / "dataset_fingerprint.json").write_text(json.dumps({"spacings": [[3.0, 2.0, 2.0]] * n_cases,
                                                              "shapes_after_crop": [[20, 40, 40]] * n_cases}))
    half = n_cases // 2
    (pre / "splits_final.json").write_text(json.dumps([{"train": names[:half], "val": names[half:]}]))
    return training_env(data)


def training_env(data: Path) -> dict:
    """The environment of a training script on nnU-Net folders under `data` (one thread, no worker processes)."""
    return dict(os.environ, nnUNet_raw=str(data / "nnUNet_raw"), nnUNet_preprocessed=str(data / "nnUNet_preprocessed"),
                nnUNet_results=str(data / "nnUNet_results"), nnUNet_n_proc_DA="0", nnUNet_compile="f",
                OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([str(REPO / "training"), os.environ.get("PYTHONPATH", "")]))
