"""promptcl: prompts, prefixes and masks learned on top of frozen pretrained transformers.

``run(load_config(...), out)`` trains a continual-learning run into a run directory;
``load(out).predict(inputs)`` uses it (promptcl/models/); ``push(out, "OWNER/NAME")`` shares
it on the Hugging Face Hub, from where ``load("hf:OWNER/NAME")`` loads it.
"""

from promptcl.config import RunConfig
from promptcl.errors import UsageError
from promptcl.models import Prediction, TrainedModel, load, push
from promptcl.protocols.continual import load_config, run
from promptcl.version import __version__

__all__ = [
    "Prediction",
    "RunConfig",
    "TrainedModel",
    "UsageError",
    "__version__",
    "load",
    "load_config",
    "push",
    "run",
]
