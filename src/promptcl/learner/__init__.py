"""The training / evaluation loop and checkpoints."""

from promptcl.learner.loop import Experiment, run

__all__ = ["Experiment", "run"]
