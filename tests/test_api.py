"""The public API: one Ensemble, `segment` on paths, SimpleITK images and arrays; cheap package import."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk

import panther_ensemble
from panther_ensemble import Ensemble, InputError, Segmentation, read_image

SPEC = {"version": 1, "task": 1, "members": [{"name": "A", "model": "A", "folds": [0, 1], "mirroring": False},
                                             {"name": "B", "model": "B", "folds": [0], "mirroring": False}]}


def test_segment_path_image_and_array_agree(models, mri_file, tmp_path):
    ensemble = Ensemble.from_spec(SPEC, models, device="cpu")
    by_path = ensemble.segment(mri_file)
    image = sitk.ReadImage(str(mri_file))
    by_image = ensemble.segment(image)
    array, geometry = read_image(mri_file)
    by_array = ensemble.segment((array, geometry), probabilities=True)
    assert isinstance(by_path, Segmentation)
    assert by_path.mask.dtype == np.uint8 and by_path.mask.shape == array.shape
    assert np.array_equal(by_path.mask, by_image.mask) and np.array_equal(by_path.mask, by_array.mask)
    assert 0 < by_path.tumour_voxels < by_path.mask.size
    assert by_path.tumour_volume_mm3 == pytest.approx(by_path.tumour_voxels * np.prod(image.GetSpacing()))
    assert by_path.probabilities is None
    assert tuple(by_array.probabilities.shape) == (len(by_array.labels), *array.shape)
    tumour = by_array.labels.index("tumor")
    assert np.array_equal(by_array.probabilities.argmax(0).numpy() == tumour, by_array.mask.astype(bool))
    assert by_path.timings["total"] > 0 and any(k.startswith("predict") for k in by_path.timings)
    saved = sitk.ReadImage(str(by_path.save(tmp_path / "out" / "mask.mha")))
    assert saved.GetSize() == image.GetSize() and saved.GetDirection() == image.GetDirection()
    assert np.array_equal(sitk.GetArrayFromImage(saved), by_path.mask)


def test_never_empty_gives_the_largest_argmax_component_when_the_threshold_leaves_nothing(models, mri_file):
    import cc3d

    argmax = Ensemble.from_spec(SPEC, models, device="cpu").segment(mri_file, probabilities=True)
    tumour = argmax.probabilities[argmax.labels.index("tumor")]
    assert argmax.tumour_voxels > 0 and float(tumour.max()) < 0.999
    strict = dict(SPEC, decision={"rule": "threshold", "threshold": 0.999})
    assert Ensemble.from_spec(strict, models, device="cpu").segment(mri_file).tumour_voxels == 0
    kept = Ensemble.from_spec(dict(strict, postprocess={"never_empty": True}), models, device="cpu").segment(mri_file)
    components, n = cc3d.connected_components(argmax.mask, connectivity=26, return_N=True)
    largest = np.bincount(components.ravel())[1:].argmax() + 1
    assert n >= 1 and np.array_equal(kept.mask, (components == largest).astype(np.uint8))


def test_member_maps_and_networks(models, mri_file):
    ensemble = Ensemble.from_spec(SPEC, models, device="cpu")
    seen = {}
    ensemble.segment(mri_file, on_member=lambda name, p, labels: seen.__setitem__(name, (tuple(p.shape), labels)))
    assert set(seen) == {"A", "B"} and all(shape[0] == len(labels) for shape, labels in seen.values())
    assert {k: len(v) for k, v in ensemble.networks.items()} == {"A": 2, "B": 1}


def test_spec_from_a_file_and_bad_input(models, mri_file, tmp_path):
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(SPEC))
    ensemble = Ensemble.from_spec(path, models, device="cpu")
    assert [m.name for m in ensemble.spec.members] == ["A", "B"]
    with pytest.raises(InputError, match="no such image file"):
        ensemble.segment(tmp_path / "missing.mha")
    array, geometry = read_image(mri_file)
    with pytest.raises(InputError, match="does not match"):
        ensemble.segment((array[:-1], geometry))
    with pytest.raises(InputError, match="model folder does not exist"):
        Ensemble.from_spec(dict(SPEC, members=[dict(SPEC["members"][0], model="nowhere")]), models, device="cpu")


def test_for_task_uses_the_shipped_spec():
    ensemble = Ensemble.for_task(1, device="cpu")
    shipped = json.loads((panther_ensemble.api.locate_app_root() / "resources" / "task1.json").read_text())
    assert [m.name for m in ensemble.spec.members] == [m["name"] for m in shipped["members"]]
    with pytest.raises(InputError, match="must be 1 or 2"):
        Ensemble.for_task(3)


def test_importing_the_package_loads_no_torch_and_no_nnunet():
    code = ("import sys, panther_ensemble; assert panther_ensemble.__version__; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'nnunetv2', 'SimpleITK')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_engine_imports_no_nnunet_planning_or_preprocessing():
    """The fast path needs neither nnU-Net's plans handler nor its preprocessing package (about a second of
    imports on a small CPU); faithful mode imports them when it runs."""
    code = ("import sys, panther_ensemble.inference.engine; "
            "print(sorted({m for m in sys.modules if m.startswith(('nnunetv2.preprocessing', "
            "'nnunetv2.utilities.plans_handling', 'nnunetv2.experiment_planning', 'pandas', "
            "'batchgenerators.augmentations', 'batchgenerators.dataloading', 'batchgenerators.transforms'))}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
