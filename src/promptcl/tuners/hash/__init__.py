from promptcl.tuners import register_tuner
from promptcl.tuners.hash.config import HashConfig
from promptcl.tuners.hash.model import Hash

register_tuner(Hash)

__all__ = ["HashConfig", "Hash"]
