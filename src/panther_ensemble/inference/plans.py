"""What a member's plans.json says, as small plain objects: the only reader of nnU-Net's plans format.

`read_configuration` resolves one configuration (with nnU-Net's `inherits_from` inheritance) into a
`ConfigurationPlan`; `PreprocessPlan` is the part of it that shapes the network input and the way back,
which is all that preprocessing and resampling see. Faithful mode still runs nnU-Net's own classes: they
are made from the plain dicts kept here, and imported only when that mode runs (nnU-Net's plans handler
imports its planning and preprocessing packages, about a second on a small CPU, which the fast path
does not need).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np


class PlansError(ValueError):
    """plans.json lacks something inference needs; the caller names the file."""


@dataclass(frozen=True)
class ConfigurationPlan:
    """One configuration of plans.json, inheritance resolved."""

    name: str
    settings: Mapping[str, Any]
    transpose_forward: tuple[int, ...]
    intensity_properties: Mapping[str, Any]  # plans' foreground_intensity_properties_per_channel
    plans: Mapping[str, Any] = field(repr=False, compare=False)

    @property
    def transpose_backward(self) -> tuple[int, ...]:
        return tuple(int(i) for i in np.argsort(self.transpose_forward))

    @property
    def patch_size(self) -> tuple[int, ...]:
        return tuple(int(p) for p in self.settings["patch_size"])

    @property
    def spacing(self) -> tuple[float, ...]:
        return tuple(float(s) for s in self.settings["spacing"])

    @property
    def previous_stage(self) -> str | None:
        return self.settings.get("previous_stage")

    @property
    def has_architecture(self) -> bool:
        return "architecture" in self.settings

    def preprocess_plan(self, mode: str, dataset_json: Mapping[str, Any]) -> "PreprocessPlan":
        s = self.settings
        return PreprocessPlan(
            mode=mode,
            transpose_forward=self.transpose_forward,
            spacing=self.spacing,
            normalization=str(s["normalization_schemes"][0]),
            use_mask_for_norm=bool(s["use_mask_for_norm"][0]),
            intensity_properties=dict(self.intensity_properties.get("0", {})),
            resampling_data=(str(s["resampling_fn_data"]), dict(s["resampling_fn_data_kwargs"])),
            resampling_probabilities=(str(s["resampling_fn_probabilities"]),
                                      dict(s["resampling_fn_probabilities_kwargs"])),
            preprocessor_name=str(s.get("preprocessor_name", "DefaultPreprocessor")),
            configuration_name=self.name,
            plans=self.plans,
            dataset_json=dataset_json,
        )


def read_configuration(plans: Mapping[str, Any], name: str) -> ConfigurationPlan:
    """The configuration `name` as nnU-Net's PlansManager.get_configuration resolves it."""
    configurations = plans.get("configurations")
    if not isinstance(configurations, dict):
        raise PlansError("no 'configurations'")
    settings = _resolve(configurations, name, ())
    for key in ("patch_size", "spacing", "normalization_schemes", "use_mask_for_norm", "resampling_fn_data",
                "resampling_fn_data_kwargs", "resampling_fn_probabilities", "resampling_fn_probabilities_kwargs"):
        if key not in settings:
            raise PlansError(f"configuration {name!r} has no {key!r}")
    return ConfigurationPlan(name, settings, tuple(int(i) for i in plans.get("transpose_forward", (0, 1, 2))),
                             plans.get("foreground_intensity_properties_per_channel", {}), plans)


def _resolve(configurations: Mapping[str, Any], name: str, visited: tuple[str, ...]) -> dict:
    if name not in configurations:
        raise PlansError(f"configuration {name!r} not in plans (has: {', '.join(configurations)})")
    settings = json.loads(json.dumps(configurations[name]))  # a deep copy of plain JSON
    parent = settings.get("inherits_from")
    if parent is None:
        return settings
    if parent in visited or parent == name:
        raise PlansError(f"configurations inherit in a circle: {' -> '.join((*visited, name, parent))}")
    base = _resolve(configurations, parent, (*visited, name))
    base.update(settings)
    return base


def compute_new_shape(old_shape: Sequence[int], old_spacing: Sequence[float],
                      new_spacing: Sequence[float]) -> list[int]:
    """nnU-Net's `compute_new_shape`: the grid size after resampling (tested against nnU-Net's own)."""
    if not len(old_shape) == len(old_spacing) == len(new_spacing):
        raise ValueError(f"shape {old_shape}, spacing {old_spacing} and target {new_spacing} differ in length")
    return [int(round(i / j * k)) for i, j, k in zip(old_spacing, new_spacing, old_shape)]


@dataclass(frozen=True, eq=False)
class PreprocessPlan:
    """Everything that shapes a member's network input and the way back to the image grid."""

    mode: str  # "faithful" (nnU-Net's own code) or "fast" (torch twins on the compute device)
    transpose_forward: tuple[int, ...]
    spacing: tuple[float, ...]  # the configuration's target spacing (2 values for a 2D configuration)
    normalization: str  # scheme of the one input channel
    use_mask_for_norm: bool
    intensity_properties: Mapping[str, Any]
    resampling_data: tuple[str, Mapping[str, Any]]  # function name, kwargs
    resampling_probabilities: tuple[str, Mapping[str, Any]]
    preprocessor_name: str
    # for faithful mode only: nnU-Net's objects are made from these when it runs
    configuration_name: str = ""
    plans: Mapping[str, Any] = field(default_factory=dict, repr=False)
    dataset_json: Mapping[str, Any] = field(default_factory=dict, repr=False)

    @property
    def transpose_backward(self) -> tuple[int, ...]:
        return tuple(int(i) for i in np.argsort(self.transpose_forward))

    def target_spacing(self, spacing_transposed: Sequence[float]) -> tuple[float, ...]:
        spacing = list(self.spacing)
        if len(spacing) < len(spacing_transposed):  # 2D configuration: the slice spacing stays
            spacing = [spacing_transposed[0], *spacing]
        return tuple(float(s) for s in spacing)

    def signature(self) -> str:
        """Equal signatures give equal network inputs: members that share one share the preprocessing."""
        return json.dumps({
            "mode": self.mode,
            "transpose_forward": list(self.transpose_forward),
            "spacing": list(self.spacing),
            "normalization": self.normalization,
            "use_mask_for_norm": self.use_mask_for_norm,
            # CT-style normalisation depends on the dataset's intensity statistics
            "intensities": dict(self.intensity_properties) if self.normalization == "CTNormalization" else None,
            "preprocessor": self.preprocessor_name,
            "resampling_fn_data": self.resampling_data[0],
            "resampling_fn_data_kwargs": dict(self.resampling_data[1]),
        }, sort_keys=True)

    def nnunet_configuration(self):
        """nnU-Net's (PlansManager, ConfigurationManager) for this plan (faithful mode)."""
        from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

        manager = PlansManager(dict(self.plans))
        return manager, manager.get_configuration(self.configuration_name)
