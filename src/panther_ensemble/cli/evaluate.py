"""`panther-ensemble evaluate` (command-line glue; the work is in panther_ensemble.evaluate)."""

from ..evaluate import HELP, add_arguments, main  # noqa: F401
