"""promptcl: prompts, prefixes and masks learned on top of frozen pretrained transformers."""

from promptcl.config import RunConfig, load_config
from promptcl.errors import UsageError
from promptcl.learner import run

__all__ = ["RunConfig", "UsageError", "load_config", "run"]
__version__ = "0.1.0"
