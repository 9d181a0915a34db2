"""Run configuration of both commands: the schema (schema.py), reading YAML files and overrides
into it (reading.py) and the rules that read older configs (migrate.py).

Method options are looked up where a config is loaded, in the protocols: this package imports
no method registry.
"""

from promptcl.config.reading import (
    SHIPPED_CONFIGS,
    build_dataclass,
    config_differences,
    load_structured,
    read_yaml,
    resolve_config,
    shipped_configs,
    to_dict,
)
from promptcl.config.schema import (
    B2NConfig,
    B2NDataConfig,
    ContinualTrainConfig,
    DataConfig,
    RunConfig,
    StreamDataConfig,
    TrainConfig,
    b2n_training,
)

__all__ = [
    "SHIPPED_CONFIGS",
    "B2NConfig",
    "B2NDataConfig",
    "ContinualTrainConfig",
    "DataConfig",
    "RunConfig",
    "StreamDataConfig",
    "TrainConfig",
    "b2n_training",
    "build_dataclass",
    "config_differences",
    "load_structured",
    "read_yaml",
    "resolve_config",
    "shipped_configs",
    "to_dict",
]
