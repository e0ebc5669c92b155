"""`panther-ensemble fit` (command-line glue; the work is in panther_ensemble.fit)."""

from ..fit import HELP, add_arguments, main  # noqa: F401
