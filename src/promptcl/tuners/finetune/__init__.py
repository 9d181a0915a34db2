from promptcl.tuners import register_tuner
from promptcl.tuners.finetune.config import FinetuneConfig
from promptcl.tuners.finetune.model import SequentialFinetune

register_tuner(SequentialFinetune)

__all__ = ["FinetuneConfig", "SequentialFinetune"]
