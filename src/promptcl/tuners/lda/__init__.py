from promptcl.tuners import register_tuner
from promptcl.tuners.lda.config import LDAConfig
from promptcl.tuners.lda.model import LDA

register_tuner(LDA)

__all__ = ["LDA", "LDAConfig"]
