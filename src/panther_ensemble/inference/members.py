"""nnU-Net v2 model folders -> ensemble members (one network per fold, built from plans.json alone).

The network is built from the configuration's `architecture` entry with nnU-Net's own
`get_network_from_plans`, never by importing the trainer class named in the checkpoint, so checkpoints
written by custom trainers (`nnUNetTrainer1e3`, `..._DA5`, ...) load without their code.

A checkpoint is a pickle. It is loaded with `torch.load(weights_only=True)` and an explicit allow-list of
the few non-tensor types that nnU-Net's trainer writes (numpy scalars and dtypes in its training log);
anything else is refused with a message naming the file and the type. Only the weights, the
configuration name, the trainer name and the mirroring axes are kept.
"""

from __future__ import annotations

import json
import logging
import pickle
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

from ..errors import InputError, one_line
from ..spec import EnsembleSpec, MemberSpec
from .plans import ConfigurationPlan, PlansError, PreprocessPlan, read_configuration

log = logging.getLogger(__name__)


def _allowed_checkpoint_globals() -> list:
    """The non-tensor types found in checkpoints written by nnU-Net's trainer (numpy 1.x and 2.x names)."""
    scalar = np._core.multiarray.scalar if hasattr(np, "_core") else np.core.multiarray.scalar
    allowed: list = [scalar, (scalar, "numpy.core.multiarray.scalar"), (scalar, "numpy._core.multiarray.scalar"),
                     np.dtype]
    for name in ("Float16DType", "Float32DType", "Float64DType", "Int8DType", "Int16DType", "Int32DType",
                 "Int64DType", "UInt8DType", "UInt16DType", "UInt32DType", "UInt64DType", "BoolDType"):
        if hasattr(np, "dtypes") and hasattr(np.dtypes, name):
            allowed.append(getattr(np.dtypes, name))
    return allowed


@dataclass(frozen=True)
class FoldCheckpoint:
    path: Path
    network_weights: dict
    configuration: str | None
    trainer_name: str
    mirror_axes: tuple[int, ...] | None


def load_checkpoint(path: Path) -> FoldCheckpoint:
    if not path.is_file():
        raise InputError(path, "checkpoint file is missing")
    try:
        with torch.serialization.safe_globals(_allowed_checkpoint_globals()):
            raw = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL\s+([\w.]+)", str(exc))
        if found:
            raise InputError(path, f"refused to load: the checkpoint holds {found.group(1)}, a type outside the "
                                   "allow-list of nnU-Net checkpoint contents (a checkpoint is a pickle: only load "
                                   "ones you trust)") from None
        raise InputError(path, _corrupt_checkpoint(path, exc)) from None
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - torch raises many types for a damaged file (KeyError, EOFError, ...)
        if type(exc).__name__ == "OutOfMemoryError" or "allocate" in str(exc).lower():
            raise
        raise InputError(path, _corrupt_checkpoint(path, exc)) from None
    if not isinstance(raw, dict) or "network_weights" not in raw:
        raise InputError(path, "not an nnU-Net checkpoint (no 'network_weights')")
    init_args = raw.get("init_args") or {}
    mirror_axes = raw.get("inference_allowed_mirroring_axes")
    return FoldCheckpoint(
        path=path,
        network_weights=_plain_state_dict(raw["network_weights"]),
        configuration=init_args.get("configuration") if isinstance(init_args, dict) else None,
        trainer_name=str(raw.get("trainer_name", "unknown")),
        mirror_axes=tuple(int(a) for a in mirror_axes) if mirror_axes is not None else None,
    )


def _corrupt_checkpoint(path: Path, exc: BaseException) -> str:
    """'truncated or corrupt checkpoint (...)' with torch's reason in a few words, without its advice (torch
    suggests `weights_only=False`, which would run whatever the file holds)."""
    text = " ".join(str(exc).split())
    if isinstance(exc, EOFError) or not text:
        reason = "the file ends early"
    elif isinstance(exc, OSError):  # torch seeking past the end of a cut zip archive
        reason = f"cut short or damaged ({exc.strerror or text})"
    elif "WeightsUnpickler error:" in text:
        reason = text.split("WeightsUnpickler error:", 1)[1].split(" Check the documentation")[0].strip()
        reason = f"unreadable pickle data: {reason[:1].lower() + reason[1:]}" if reason else "unreadable pickle data"
    elif "PytorchStreamReader failed" in text:
        detail = text.split("PytorchStreamReader failed ", 1)[1].split(". This is")[0]
        reason = f"broken zip archive, {detail.removeprefix('reading zip archive: ')}"
    elif "Invalid magic number" in text:
        reason = "not saved by torch.save (invalid magic number)"
    elif isinstance(exc, (UnicodeError, KeyError, pickle.UnpicklingError, ValueError)):
        reason = f"unreadable pickle data ({type(exc).__name__})"
    else:
        reason = text.split(". ")[0][:120]
    try:
        size = f"; {path.stat().st_size} bytes"
    except OSError:
        size = ""
    return f"truncated or corrupt checkpoint (not a readable torch file: {reason}{size})"


def _plain_state_dict(weights: dict) -> dict:
    # torch.compile and DDP leave prefixes on parameter names
    out = {}
    for k, v in weights.items():
        for prefix in ("module.", "_orig_mod."):
            if k.startswith(prefix):
                k = k[len(prefix):]
        out[k] = v
    return out


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise InputError(path, "missing (not an nnU-Net model folder?)")
    try:
        return json.loads(path.read_text())
    except ValueError as exc:
        raise InputError(path, f"not valid JSON ({exc})") from None


@dataclass
class ModelFolder:
    """A trained nnU-Net model folder: plans, labels, folds. Reads only JSON; no checkpoint yet."""

    path: Path
    plans: dict
    dataset_json: dict

    @classmethod
    def open(cls, path: Path) -> "ModelFolder":
        if not path.is_dir():
            raise InputError(path, "model folder does not exist")
        folder = cls(path, _read_json(path / "plans.json"), _read_json(path / "dataset.json"))
        folder.label_names  # validate now
        return folder

    @cached_property
    def label_names(self) -> tuple[str, ...]:
        """Label name of each output channel, in channel order."""
        labels = self.dataset_json.get("labels")
        where = self.path / "dataset.json"
        if not isinstance(labels, dict) or not labels:
            raise InputError(where, "no 'labels' mapping")
        if self.dataset_json.get("regions_class_order") is not None or any(
                isinstance(v, (list, tuple)) for v in labels.values()):
            raise InputError(where, "region-based (sigmoid) models are not supported as members")
        by_value = {int(v): str(k) for k, v in labels.items() if str(k) != "ignore"}
        if sorted(by_value) != list(range(len(by_value))):
            raise InputError(where, f"label values must be 0..N-1, got {sorted(by_value)}")
        if by_value[0] != "background":
            raise InputError(where, f"label 0 must be 'background', got {by_value[0]!r}")
        return tuple(by_value[i] for i in range(len(by_value)))

    @property
    def num_input_channels(self) -> int:
        channels = self.dataset_json.get("channel_names", self.dataset_json.get("modality", {}))
        return len(channels)

    def configuration(self, name: str) -> ConfigurationPlan:
        try:
            cfg = read_configuration(self.plans, name)
        except PlansError as exc:
            raise InputError(self.path / "plans.json", str(exc)) from None
        if cfg.previous_stage is not None:
            raise InputError(self.path / "plans.json", f"configuration {name!r} is a cascade stage; "
                                                       "cascades are not supported as members")
        return cfg

    def fold_checkpoint_path(self, fold, checkpoint: str) -> Path:
        return self.path / f"fold_{fold}" / checkpoint

    def build_network(self, cfg: ConfigurationPlan) -> torch.nn.Module:
        if cfg.has_architecture:
            arch = cfg.settings["architecture"]
            class_name, kwargs, req_import = (arch["network_class_name"], arch["arch_kwargs"],
                                              arch["_kw_requires_import"])
        else:  # plans written before nnU-Net 2.4: nnU-Net's own translation (imported only for these)
            from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager

            manager = ConfigurationManager(dict(cfg.settings))
            class_name, kwargs, req_import = (manager.network_arch_class_name, manager.network_arch_init_kwargs,
                                              manager.network_arch_init_kwargs_req_import)
        return get_network_from_plans(class_name, kwargs, req_import, self.num_input_channels,
                                      len(self.label_names), allow_init=False, deep_supervision=False)


@dataclass
class Member:
    """One specialist: a model folder, its chosen folds as networks, and how the spec uses it."""

    spec: MemberSpec
    folder: ModelFolder
    configuration_name: str
    configuration: ConfigurationPlan
    networks: list[torch.nn.Module]
    trainer_name: str
    mirror_axes: tuple[int, ...] | None  # None = no mirroring (off in the spec or not allowed by training)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def label_names(self) -> tuple[str, ...]:
        return self.folder.label_names

    @property
    def patch_size(self) -> tuple[int, ...]:
        return tuple(self.configuration.patch_size)

    @cached_property
    def preprocess_plan(self) -> PreprocessPlan:
        return self.configuration.preprocess_plan(self.spec.resampling, self.folder.dataset_json)

    def to(self, device: torch.device) -> "Member":
        for net in self.networks:
            net.to(device)
        self.device = torch.device(device)
        return self


def mirroring_text(axes: tuple[int, ...] | None) -> str:
    """'mirroring off' or 'mirroring axes (0, 1, 2)', for the log."""
    return f"mirroring axes {tuple(axes)}" if axes else "mirroring off"


def check_member_files(member: MemberSpec, weights_root: Path, spec: EnsembleSpec) -> ModelFolder:
    """Cheap checks before any heavy work: folder, JSON files, labels, fold checkpoints present."""
    folder = ModelFolder.open(weights_root / member.model)
    names = folder.label_names
    if spec.tumor_label not in names:
        raise InputError(folder.path / "dataset.json",
                         f"member {member.name!r} has no label {spec.tumor_label!r} (labels: {', '.join(names)}); "
                         f"check the spec's tumor_label ({spec.source})")
    for label in member.class_weights:
        if label not in names:
            raise InputError(spec.source, f"members[{member.name}].class_weights: unknown label {label!r} for "
                                          f"model {member.model} (labels: {', '.join(names)})")
    if folder.num_input_channels != 1:
        raise InputError(folder.path / "dataset.json",
                         f"member expects {folder.num_input_channels} input channels; PANTHER gives one MRI")
    for fold in member.folds:
        path = folder.fold_checkpoint_path(fold, member.checkpoint)
        if not path.is_file():
            raise InputError(path, f"checkpoint for fold {fold} of member {member.name!r} is missing")
    if member.configuration is not None:
        folder.configuration(member.configuration)
    return folder


def load_member(member: MemberSpec, folder: ModelFolder, device: torch.device) -> Member:
    """Read every fold's checkpoint once and build one network per fold on `device`."""
    checkpoints = [load_checkpoint(folder.fold_checkpoint_path(f, member.checkpoint)) for f in member.folds]
    configs = {c.configuration for c in checkpoints}
    if member.configuration is not None:
        configuration_name = member.configuration
    elif len(configs) == 1 and None not in configs:
        configuration_name = configs.pop()
    else:
        raise InputError(folder.path, f"cannot tell the configuration of member {member.name!r} from its "
                                      f"checkpoints ({sorted(map(str, configs))}); set 'configuration' in the spec")
    cfg = folder.configuration(configuration_name)
    networks = []
    for ckpt in checkpoints:
        network = folder.build_network(cfg)
        try:
            network.load_state_dict(ckpt.network_weights, strict=True)
        except RuntimeError as exc:
            lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
            first = next((ln for ln in lines[1:]), lines[0] if lines else "")  # line 0: 'Error(s) in loading ...'
            raise InputError(ckpt.path, f"weights do not fit the network in plans.json ({one_line(first, 240)})") \
                from None
        network.eval()
        for p in network.parameters():
            p.requires_grad_(False)
        networks.append(network.to(device))
    axes = {c.mirror_axes for c in checkpoints}
    mirror_axes = checkpoints[0].mirror_axes if member.mirroring and len(axes) == 1 else None
    if member.mirroring and len(axes) > 1:
        log.warning("member %s: folds disagree on mirroring axes %s; mirroring off", member.name, axes)
    trainer_names = sorted({c.trainer_name for c in checkpoints})
    log.info("member %s: %s, configuration %s, folds %s, trainer %s, %s", member.name, folder.path.name,
             configuration_name, list(member.folds), "/".join(trainer_names), mirroring_text(mirror_axes))
    return Member(spec=member, folder=folder, configuration_name=configuration_name, configuration=cfg,
                  networks=networks, trainer_name="/".join(trainer_names), mirror_axes=mirror_axes,
                  device=torch.device(device))
