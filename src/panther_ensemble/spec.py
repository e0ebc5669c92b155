"""The ensemble spec: which members, which folds and checkpoints, how much each counts, how to decide.

A spec is data (one JSON file per task in `resources/`), validated on load. Every problem is reported as
`<file>: <field path>: <problem>`, e.g. `resources/task1.json: members[1].folds[0]: ...`. Unknown fields are
errors, so a typo never silently falls back to a default. The format is documented in
docs/ARCHITECTURE.md; `SPEC_VERSION` changes whenever its meaning changes.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .errors import InputError

SPEC_VERSION = 1
RESAMPLING_MODES = ("faithful", "fast")
DECISION_RULES = ("argmax", "threshold")
CHECKPOINT_NAMES = ("checkpoint_final.pth", "checkpoint_best.pth")

Fold = int | str  # 0..4 or "all"


@dataclass(frozen=True)
class MemberSpec:
    name: str
    model: str  # model folder, relative to the weights root
    folds: tuple[Fold, ...]
    checkpoint: str = "checkpoint_final.pth"
    weight: float = 1.0
    class_weights: dict[str, float] = field(default_factory=dict)  # label name -> factor (default 1)
    mirroring: bool = True  # use the checkpoint's mirroring axes; False = no test-time mirroring
    tile_step_size: float = 0.5
    resampling: str = "fast"
    configuration: str | None = None  # default: the one recorded in the checkpoint


@dataclass(frozen=True)
class DecisionSpec:
    rule: str = "argmax"
    threshold: float | None = None  # for rule == "threshold": tumour if weighted P(tumour) >= threshold


@dataclass(frozen=True)
class PostprocessSpec:
    min_volume_mm3: float | None = None  # drop tumour components smaller than this
    keep_largest: int | None = None  # keep only the K largest tumour components
    max_distance_to_pancreas_mm: float | None = None  # drop components farther than this from predicted pancreas
    # when the decision and the rules above leave no tumour voxel: the largest component of the argmax tumour
    # mask instead (every PANTHER case has a tumour, and an empty mask scores the worst HD95/MASD there is)
    never_empty: bool = False
    # keep only the K components with the highest peak weighted P(tumour) (exclusive with keep_largest): a large
    # diffuse false positive does not outrank a smaller tumour the ensemble is sure of
    keep_most_confident: int | None = None

    @property
    def active(self) -> bool:
        return any(v is not None and v is not False for v in asdict(self).values())


@dataclass(frozen=True)
class EnsembleSpec:
    version: int
    task: int
    members: tuple[MemberSpec, ...]
    tumor_label: str = "tumor"
    pancreas_label: str = "pancreas"
    decision: DecisionSpec = field(default_factory=DecisionSpec)
    postprocess: PostprocessSpec = field(default_factory=PostprocessSpec)
    time_budget_s: float | None = None
    description: str = ""
    source: str = "<dict>"  # where it was read from, for messages

    def to_json(self) -> dict[str, Any]:
        """The spec as `parse_spec` reads it (round trip: parse_spec(spec.to_json()) == spec)."""
        d = asdict(self)
        d.pop("source")
        d["members"] = [dict(m, folds=list(m["folds"])) for m in d["members"]]
        for m in d["members"]:
            if m["configuration"] is None:
                m.pop("configuration")
        if d["decision"]["threshold"] is None:
            d["decision"].pop("threshold")
        if d["postprocess"]["keep_most_confident"] is None:  # added later: a spec without it stays readable as before
            d["postprocess"].pop("keep_most_confident")
        return d

    def save(self, path: Path | str) -> None:
        Path(path).write_text(json.dumps(self.to_json(), indent=2) + "\n")


def load_spec(path: Path | str) -> EnsembleSpec:
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(path, "spec file does not exist") from None
    except ValueError as exc:
        raise InputError(path, f"not valid JSON ({exc})") from None
    return parse_spec(raw, source=str(path))


def parse_spec(raw: Any, source: str = "<dict>") -> EnsembleSpec:
    v = _Validator(source)
    obj = v.mapping(raw, "", required={"version", "task", "members"},
                    optional={"tumor_label", "pancreas_label", "decision", "postprocess", "time_budget_s",
                              "description"})
    version = v.integer(obj["version"], "version")
    if version != SPEC_VERSION:
        v.fail("version", f"this engine reads spec version {SPEC_VERSION}, got {version}")
    task = v.integer(obj["task"], "task")
    if task not in (1, 2):
        v.fail("task", f"must be 1 or 2, got {task}")
    members_raw = obj["members"]
    if not isinstance(members_raw, list) or not members_raw:
        v.fail("members", "must be a non-empty list")
    members = tuple(_member(v, m, f"members[{i}]") for i, m in enumerate(members_raw))
    if not any(m.weight > 0 for m in members):
        v.fail("members", "at least one member needs a weight > 0")
    names = [m.name for m in members]
    for i, name in enumerate(names):
        if names.index(name) != i:
            v.fail(f"members[{i}].name", f"duplicate member name {name!r}")
    tumor = v.label(obj.get("tumor_label", "tumor"), "tumor_label")
    pancreas = v.label(obj.get("pancreas_label", "pancreas"), "pancreas_label")
    if tumor == pancreas:
        v.fail("pancreas_label", "must differ from tumor_label")
    budget = obj.get("time_budget_s")
    if budget is not None:
        budget = v.positive(budget, "time_budget_s")
    return EnsembleSpec(
        version=version, task=task, members=members, tumor_label=tumor, pancreas_label=pancreas,
        decision=_decision(v, obj.get("decision", {"rule": "argmax"})),
        postprocess=_postprocess(v, obj.get("postprocess", {})),
        time_budget_s=budget, description=v.string(obj.get("description", ""), "description", allow_empty=True),
        source=source)


def _member(v: "_Validator", raw: Any, where: str) -> MemberSpec:
    m = v.mapping(raw, where, required={"name", "model", "folds"},
                  optional={"checkpoint", "weight", "class_weights", "mirroring", "tile_step_size", "resampling",
                            "configuration"})
    folds_raw = m["folds"]
    if not isinstance(folds_raw, list) or not folds_raw:
        v.fail(f"{where}.folds", "must be a non-empty list of fold numbers (0-4) or \"all\"")
    folds = []
    for j, f in enumerate(folds_raw):
        if f == "all" or (isinstance(f, int) and not isinstance(f, bool) and 0 <= f):
            folds.append(f)
        else:
            v.fail(f"{where}.folds[{j}]", f"must be a fold number >= 0 or \"all\", got {f!r}")
    if len(set(map(str, folds))) != len(folds):
        v.fail(f"{where}.folds", f"lists a fold twice: {folds_raw}")
    checkpoint = v.string(m.get("checkpoint", "checkpoint_final.pth"), f"{where}.checkpoint")
    if checkpoint not in CHECKPOINT_NAMES:
        v.fail(f"{where}.checkpoint", f"must be one of {', '.join(CHECKPOINT_NAMES)}, got {checkpoint!r}")
    cw_raw = m.get("class_weights", {})
    if not isinstance(cw_raw, dict):
        v.fail(f"{where}.class_weights", "must be an object mapping label name -> factor")
    class_weights = {v.label(k, f"{where}.class_weights"): v.non_negative(x, f"{where}.class_weights.{k}")
                     for k, x in cw_raw.items()}
    step = v.number(m.get("tile_step_size", 0.5), f"{where}.tile_step_size")
    if not 0 < step <= 1:
        v.fail(f"{where}.tile_step_size", f"must be in (0, 1], got {step}")
    resampling = v.string(m.get("resampling", "fast"), f"{where}.resampling")
    if resampling not in RESAMPLING_MODES:
        v.fail(f"{where}.resampling", f"must be one of {', '.join(RESAMPLING_MODES)}, got {resampling!r}")
    mirroring = m.get("mirroring", True)
    if not isinstance(mirroring, bool):
        v.fail(f"{where}.mirroring", f"must be true or false, got {mirroring!r}")
    configuration = m.get("configuration")
    if configuration is not None:
        configuration = v.string(configuration, f"{where}.configuration")
    model = v.string(m["model"], f"{where}.model")
    if Path(model).is_absolute() or ".." in Path(model).parts:
        v.fail(f"{where}.model", f"must be a folder relative to the weights root, got {model!r}")
    return MemberSpec(name=v.string(m["name"], f"{where}.name"), model=model, folds=tuple(folds),
                      checkpoint=checkpoint, weight=v.non_negative(m.get("weight", 1.0), f"{where}.weight"),
                      class_weights=class_weights, mirroring=mirroring, tile_step_size=step,
                      resampling=resampling, configuration=configuration)


def _decision(v: "_Validator", raw: Any) -> DecisionSpec:
    d = v.mapping(raw, "decision", required={"rule"}, optional={"threshold"})
    rule = v.string(d["rule"], "decision.rule")
    if rule not in DECISION_RULES:
        v.fail("decision.rule", f"must be one of {', '.join(DECISION_RULES)}, got {rule!r}")
    if rule == "threshold":
        if "threshold" not in d:
            v.fail("decision.threshold", "required when rule is \"threshold\"")
        t = v.number(d["threshold"], "decision.threshold")
        if not 0 < t < 1:
            v.fail("decision.threshold", f"must be in (0, 1), got {t}")
        return DecisionSpec(rule, t)
    if "threshold" in d:
        v.fail("decision.threshold", "only allowed when rule is \"threshold\"")
    return DecisionSpec(rule, None)


def _postprocess(v: "_Validator", raw: Any) -> PostprocessSpec:
    p = v.mapping(raw, "postprocess", required=set(),
                  optional={"min_volume_mm3", "keep_largest", "max_distance_to_pancreas_mm", "keep_most_confident",
                            "never_empty"})
    min_vol = p.get("min_volume_mm3")
    keep = p.get("keep_largest")
    dist = p.get("max_distance_to_pancreas_mm")
    if min_vol is not None:
        min_vol = v.non_negative(min_vol, "postprocess.min_volume_mm3")
    if keep is not None:
        keep = v.integer(keep, "postprocess.keep_largest")
        if keep < 1:
            v.fail("postprocess.keep_largest", f"must be >= 1, got {keep}")
    if dist is not None:
        dist = v.non_negative(dist, "postprocess.max_distance_to_pancreas_mm")
    confident = p.get("keep_most_confident")
    if confident is not None:
        confident = v.integer(confident, "postprocess.keep_most_confident")
        if confident < 1:
            v.fail("postprocess.keep_most_confident", f"must be >= 1, got {confident}")
        if keep is not None:
            v.fail("postprocess.keep_most_confident", "cannot be combined with keep_largest (both choose which "
                   "components stay: set one)")
    never_empty = p.get("never_empty", False)
    if not isinstance(never_empty, bool):
        v.fail("postprocess.never_empty", f"must be true or false, got {never_empty!r}")
    return PostprocessSpec(min_vol, keep, dist, never_empty, keep_most_confident=confident)


class _Validator:
    def __init__(self, source: str):
        self.source = source

    def fail(self, field_path: str, problem: str):
        raise InputError(self.source, f"{field_path or '<top level>'}: {problem}")

    def mapping(self, raw: Any, where: str, required: set[str], optional: set[str]) -> dict:
        if not isinstance(raw, dict):
            self.fail(where, f"must be a JSON object, got {type(raw).__name__}")
        prefix = f"{where}." if where else ""
        for key in sorted(required - raw.keys()):
            self.fail(f"{prefix}{key}", "required field is missing")
        for key in sorted(raw.keys() - required - optional):
            allowed = ", ".join(sorted(required | optional))
            self.fail(f"{prefix}{key}", f"unknown field (allowed: {allowed})")
        return raw

    def string(self, x: Any, where: str, allow_empty: bool = False) -> str:
        if not isinstance(x, str) or (not allow_empty and not x.strip()):
            self.fail(where, f"must be a non-empty string, got {x!r}")
        return x

    def label(self, x: Any, where: str) -> str:
        return self.string(x, where)

    def number(self, x: Any, where: str) -> float:
        if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
            self.fail(where, f"must be a finite number, got {x!r}")
        return float(x)

    def integer(self, x: Any, where: str) -> int:
        if isinstance(x, bool) or not isinstance(x, int):
            self.fail(where, f"must be an integer, got {x!r}")
        return x

    def positive(self, x: Any, where: str) -> float:
        x = self.number(x, where)
        if x <= 0:
            self.fail(where, f"must be > 0, got {x}")
        return x

    def non_negative(self, x: Any, where: str) -> float:
        x = self.number(x, where)
        if x < 0:
            self.fail(where, f"must be >= 0, got {x}")
        return x
