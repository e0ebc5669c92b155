"""Our plans.json reader and the small nnU-Net functions re-implemented to keep the engine's imports light,
each against nnU-Net's own."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from nnunetv2.preprocessing.resampling.default_resampling import compute_new_shape as nnunet_new_shape
from nnunetv2.preprocessing.resampling.default_resampling import determine_do_sep_z_and_axis as nnunet_sep
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

import modelfactory as mf
from panther_ensemble.inference.plans import PlansError, compute_new_shape, read_configuration
from panther_ensemble.inference.resample import determine_do_sep_z_and_axis


def test_compute_new_shape_matches_nnunet():
    rng = np.random.default_rng(0)
    for _ in range(500):
        shape = rng.integers(1, 600, 3).tolist()
        old = rng.uniform(0.3, 6.0, 3).round(4).tolist()
        new = rng.uniform(0.3, 6.0, 3).round(4).tolist()
        assert compute_new_shape(shape, old, new) == nnunet_new_shape(shape, old, new).tolist()


def test_separate_z_rule_matches_nnunet():
    spacings = [(3.0, 1.0, 1.0), (1.0, 1.0, 3.5), (1.0, 1.0, 1.0), (4.0, 4.0, 1.0), (2.0, 0.7, 0.7), (3.1, 1.0, 1.0),
                (0.24, 1.25, 1.25), (5.0, 1.0, 2.0)]
    for cur, new in itertools.product(spacings, repeat=2):
        for force in (None, True, False):
            for threshold in (3, 2.5):
                ours = determine_do_sep_z_and_axis(force, cur, new, threshold)
                theirs = nnunet_sep(force, cur, new, threshold)
                assert (ours[0], ours[1]) == (theirs[0], None if theirs[1] is None else int(theirs[1])), (cur, new, force)


def test_configuration_with_inheritance_matches_the_plans_manager():
    plans = mf.make_plans(spacing=(3.0, 1.5, 1.5), patch_size=(8, 32, 32), transpose_forward=(1, 2, 0))
    plans["configurations"]["3d_lowres"] = {"inherits_from": "3d_fullres", "spacing": [6.0, 3.0, 3.0],
                                            "data_identifier": "x_3d_lowres"}
    plans["configurations"]["3d_lowres_big"] = {"inherits_from": "3d_lowres", "patch_size": [16, 48, 48]}
    manager = PlansManager(plans)
    for name in ("3d_fullres", "3d_lowres", "3d_lowres_big"):
        ours, theirs = read_configuration(plans, name), manager.get_configuration(name)
        assert ours.patch_size == tuple(theirs.patch_size) and ours.spacing == tuple(theirs.spacing)
        assert dict(ours.settings) == theirs.configuration
        assert ours.transpose_forward == tuple(manager.transpose_forward)
        assert ours.transpose_backward == tuple(manager.transpose_backward)
        plan = ours.preprocess_plan("fast", {})
        assert plan.normalization == theirs.normalization_schemes[0]
        assert plan.use_mask_for_norm == theirs.use_mask_for_norm[0]


def test_plans_errors_name_the_problem():
    plans = mf.make_plans()
    plans["configurations"]["a"] = {"inherits_from": "b"}
    plans["configurations"]["b"] = {"inherits_from": "a"}
    with pytest.raises(PlansError, match="circle"):
        read_configuration(plans, "a")
    with pytest.raises(PlansError, match="not in plans"):
        read_configuration(plans, "2d")
    del plans["configurations"]["3d_fullres"]["patch_size"]
    with pytest.raises(PlansError, match="patch_size"):
        read_configuration(plans, "3d_fullres")
