"""Fitting an ensemble: member weights, decision rule and post-processing, chosen by the PANTHER metrics on
out-of-fold probability maps and estimated by nested cross-validation.

    space.py      candidates and the search space (weightings, decisions, post-processing settings)
    sources.py    where each member's out-of-fold maps are (our npz or nnU-Net's fold_*/validation)
    cases.py      the crop rule and the cases as kept in memory (live voxels of each crop, float16)
    evaluator.py  scoring candidates exactly as the engine decides, with every cache it needs
    crossval.py   selection on some cases, nested cross-validation
    report.py     fitted spec, report.json, report.md
    plots.py      tradeoff.png

Python use::

    from panther_ensemble.scoring import fit
    members = [fit.find_member("DA5", Path("oof/DA5")), fit.find_member("default", Path("nnUNet_results/.../model"))]
    space = fit.SearchSpace.build(len(members))                  # the defaults of the command line
    data = fit.load_cases(members, Path("labelsTr"), fit.crop_rule(space, members, "tumor", "pancreas"))
    ev = fit.Evaluator(data, "tumor", "pancreas")
    result = fit.nested_cv(ev, space, objective="mean-rank", folds=5)
    result.heldout_agg, result.final.best.cand                  # held-out estimate, the final choice

docs/FITTING.md describes the search space, the objectives, the exact cropping and the numbers.
"""

from .cases import CaseData, CropRule, Dataset, crop_rule, load_cases
from .crossval import DEFAULT_FOLDS, OBJECTIVES, FitResult, Selection, fold_assignment, nested_cv, select
from .evaluator import DEFAULT_METRIC_WEIGHTS, Evaluator, weighted_score
from .report import build_report, fitted_spec_json, report_markdown, write_outputs
from .sources import MemberSource, find_member, peek_labels, read_map
from .space import PP_OFF, Candidate, SearchSpace, equal_candidate, simplex_grid, single_candidates

__all__ = ["DEFAULT_FOLDS", "DEFAULT_METRIC_WEIGHTS", "OBJECTIVES", "PP_OFF", "Candidate", "CaseData", "CropRule",
           "Dataset", "Evaluator", "FitResult", "MemberSource", "SearchSpace", "Selection", "build_report",
           "crop_rule", "equal_candidate", "find_member", "fitted_spec_json", "fold_assignment", "load_cases",
           "nested_cv", "peek_labels", "read_map", "report_markdown", "select", "simplex_grid", "single_candidates",
           "weighted_score", "write_outputs"]
