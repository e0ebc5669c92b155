"""`panther-ensemble phantom` (command-line glue; the work is in panther_ensemble.phantoms)."""

from ..phantoms import HELP, add_arguments, main  # noqa: F401
