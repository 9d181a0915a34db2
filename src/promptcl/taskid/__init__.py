"""Task-identity inference components, shared by the tuners that need one."""

from promptcl.taskid.gaussians import ClassGaussians, train_on_gaussians
from promptcl.taskid.gradient import entropy, gradient_id
from promptcl.taskid.keymatch import TaskKeys, cosine, match_keys, prompt_id
from promptcl.taskid.tii import TaskIdentityClassifier, TIIOptions

__all__ = [
    "ClassGaussians",
    "TIIOptions",
    "TaskKeys",
    "TaskIdentityClassifier",
    "cosine",
    "entropy",
    "gradient_id",
    "match_keys",
    "prompt_id",
    "train_on_gaussians",
]
