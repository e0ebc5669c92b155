"""Weighted ensembling in a common label space, decisions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from panther_ensemble.inference.ensemble import WeightedProbabilities, common_label_space, decide, outside_box


def softmax(shape, labels, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(torch.randn((len(labels), *shape), generator=g) * 3, 0)


def test_common_label_space_orders_by_first_appearance():
    assert common_label_space([("background", "tumor", "pancreas"), ("background", "pancreas", "tumor")]) == (
        "background", "tumor", "pancreas")
    assert common_label_space([("background", "tumor")]) == ("background", "tumor")


def test_equal_weights_equal_nnunet_average():
    labels = ("background", "tumor", "pancreas")
    a, b = softmax((4, 5, 6), labels, 0), softmax((4, 5, 6), labels, 1)
    acc = WeightedProbabilities(labels, (4, 5, 6), torch.device("cpu"))
    full = [[0, 4], [0, 5], [0, 6]]
    acc.add("a", a, labels, full, 1.0)
    acc.add("b", b, labels, full, 1.0)
    assert torch.equal(acc.probabilities(), (a + b) / 2)


def test_labels_matched_by_name_and_missing_labels():
    common = ("background", "tumor", "pancreas")
    p = softmax((3, 4, 5), common, 2)
    reordered = p[[0, 2, 1]]  # background, pancreas, tumor
    tumour_only = softmax((3, 4, 5), ("background", "tumor"), 3)
    acc = WeightedProbabilities(common, (3, 4, 5), torch.device("cpu"))
    box = [[0, 3], [0, 4], [0, 5]]
    acc.add("reordered", reordered, ("background", "pancreas", "tumor"), box, 3.0)
    acc.add("tumour_only", tumour_only, ("background", "tumor"), box, 1.0)
    out = acc.probabilities()
    torch.testing.assert_close(out[1], (3 * p[1] + tumour_only[1]) / 4)
    torch.testing.assert_close(out[0], (3 * p[0] + tumour_only[0]) / 4)
    torch.testing.assert_close(out[2], p[2])  # only the member that has a pancreas speaks for it


def test_class_weights_and_zero_weight():
    labels = ("background", "tumor", "pancreas")
    a, b = softmax((2, 3, 4), labels, 4), softmax((2, 3, 4), labels, 5)
    acc = WeightedProbabilities(labels, (2, 3, 4), torch.device("cpu"))
    box = [[0, 2], [0, 3], [0, 4]]
    acc.add("a", a, labels, box, 1.0, {"tumor": 3.0})
    acc.add("b", b, labels, box, 1.0, {"tumor": 1.0, "pancreas": 0.0})
    out = acc.probabilities()
    torch.testing.assert_close(out[1], (3 * a[1] + b[1]) / 4)
    torch.testing.assert_close(out[2], a[2])
    torch.testing.assert_close(out[0], (a[0] + b[0]) / 2)


def test_outside_the_crop_box_is_background():
    labels = ("background", "tumor")
    shape = (5, 6, 7)
    box = [[1, 4], [2, 6], [0, 5]]
    p = softmax((3, 4, 5), labels, 6)
    acc = WeightedProbabilities(labels, shape, torch.device("cpu"))
    acc.add("a", p, labels, box, 0.5)
    out = acc.probabilities()
    inside = np.zeros(shape, bool)
    inside[1:4, 2:6, 0:5] = True
    assert torch.all(out[0][torch.from_numpy(~inside)] == 1) and torch.all(out[1][torch.from_numpy(~inside)] == 0)
    torch.testing.assert_close(out[:, 1:4, 2:6, 0:5], p)


@pytest.mark.parametrize("shape,box", [((5, 6, 7), [[1, 4], [2, 6], [0, 5]]), ((4, 4, 4), [[0, 4], [0, 4], [0, 4]]),
                                       ((6, 3, 5), [[2, 3], [0, 1], [4, 5]])])
def test_outside_box_slabs_cover_the_complement_once(shape, box):
    count = np.zeros(shape, int)
    for slab in outside_box(shape, box):
        count[slab] += 1
    count[tuple(slice(a, b) for a, b in box)] += 1
    assert np.all(count == 1)


def test_decision_rules():
    labels = ("background", "tumor", "pancreas")
    probs = torch.tensor([[0.5, 0.3, 0.2, 0.1], [0.3, 0.35, 0.3, 0.45], [0.2, 0.35, 0.5, 0.45]]).view(3, 1, 1, 4)
    assert decide(probs, labels, "tumor", "argmax").flatten().tolist() == [False, True, False, True]
    assert decide(probs, labels, "tumor", "threshold", 0.3).flatten().tolist() == [True, True, True, True]
    assert decide(probs, labels, "tumor", "threshold", 0.4).flatten().tolist() == [False, False, False, True]


def test_a_label_without_weight_has_probability_zero():
    acc = WeightedProbabilities(("background", "tumor", "pancreas"), (1, 1, 2), torch.device("cpu"))
    acc.add("a", torch.tensor([0.2, 0.8]).view(2, 1, 1, 1).expand(2, 1, 1, 2), ("background", "tumor"),
            [[0, 1], [0, 1], [0, 2]], 1.0)
    out = acc.probabilities()
    assert torch.all(out[2] == 0)
    torch.testing.assert_close(out[1], torch.full((1, 1, 2), 0.8))


def test_argmax_is_matches_argmax_with_ties():
    from panther_ensemble.inference.ensemble import argmax_is

    g = torch.Generator().manual_seed(0)
    p = torch.randint(0, 4, (4, 6, 7, 8), generator=g).float() / 4  # many exact ties
    for i in range(4):
        assert torch.equal(argmax_is(p, i), p.argmax(0) == i)
