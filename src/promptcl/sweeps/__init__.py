"""Work across runs: a grid of runs in one sweep folder (grid.py, ``promptcl sweep``), their
table of mean ± std over seeds (table.py, ``promptcl table``) and settings chosen on the
validation split (tune.py, ``promptcl tune``). Each point and trial is an ordinary run
directory of ``promptcl run`` or ``promptcl b2n``."""

from promptcl.sweeps.grid import COMMANDS, Sweep, split_values
from promptcl.sweeps.table import collect, machine, markdown_table, mean_std, render
from promptcl.sweeps.tune import Tuning

__all__ = [
    "COMMANDS",
    "Sweep",
    "Tuning",
    "collect",
    "machine",
    "markdown_table",
    "mean_std",
    "render",
    "split_values",
]
