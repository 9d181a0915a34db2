"""Reading configs: a schema filled from YAML files and ``--set key=value`` overrides.

OmegaConf does the merging and type checking, so ``--set train.mask_logits=false`` is a real
boolean and an unknown key is an error rather than a silently ignored typo.
"""

from __future__ import annotations

import dataclasses
import io
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from promptcl.config.migrate import repository_path, train_device
from promptcl.errors import UsageError
from promptcl.files import read_text

# keys that may differ between a run and its resumption: they do not change results
RESUME_FREE_KEYS = (
    "name",
    "data.root",
    "train.accelerator",
    "train.devices",
    "train.strategy",
    "train.num_nodes",
    "train.compile",
    "train.logger",
    "train.progress",
    "train.checkpoint_every",
)


def _one_line(err: Exception) -> str:
    """The first line of an OmegaConf error, after the key it is about."""
    key = getattr(err, "full_key", None)
    line = str(err).splitlines()[0]
    return f"{key}: {line}" if key and not line.startswith("Key ") else line


RUN_KEYS = ("kind", "promptcl_version")  # a run's config.json: what made it, not config keys


def without_run_keys(raw: DictConfig) -> DictConfig:
    """A YAML file of config keys; a run's config.json (also valid as --config) without the
    keys that describe the run rather than configure it."""
    for key in RUN_KEYS:
        raw.pop(key, None)
    return raw


def load_structured(
    schema: type,
    path: str | Path | None,
    overrides: list[str] | tuple[str, ...],
    command: str,
    options_of: Callable[[str], type],
    run_dir: bool = False,
) -> Any:
    """Fill the dataclass ``schema`` (with ``name``, ``method``, ``tuner`` and ``data.root``
    keys) from its defaults, a YAML file and ``key=value`` overrides; ``command`` names the CLI
    command whose --help lists the keys; ``options_of(method)`` is the dataclass that checks
    ``tuner``. ``name`` defaults to the file's name, unless it is a run directory's config.json
    (``run_dir``), whose name is what the run recorded."""
    cfg = OmegaConf.structured(schema)
    try:
        if path is not None:
            raw = without_run_keys(read_yaml(resolve_config(path)))
            cfg = OmegaConf.merge(cfg, train_device(raw))
        for item in overrides:
            if "=" not in item:
                raise UsageError(f"--set {item!r} is not key=value; write e.g. --set train.lr=0.01")
        try:
            cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(list(overrides)))
        except yaml.YAMLError as err:  # a tag or an alias: --set values are plain YAML
            problem = getattr(err, "problem", None) or _one_line(err)
            raise UsageError(
                f"bad --set value ({problem}); write plain values (numbers, words, [lists]) "
                "without YAML tags (!!) or anchors (& and *), quoted if need be"
            ) from None
        config = OmegaConf.to_object(cfg)
    except (OmegaConfBaseException, TypeError) as err:  # TypeError: a list merged into a dict
        raise UsageError(
            f"bad config: {_one_line(err)}; `promptcl {command} --help` lists keys"
        ) from None
    except ValueError as err:  # raised by a config's __post_init__
        raise UsageError(f"bad config: {err}") from None
    if config.name is None and path is not None and not run_dir:
        config.name = config_name(resolve_config(path))
    if config.data.root is None and os.environ.get("PROMPTCL_DATA"):
        config.data.root = os.environ["PROMPTCL_DATA"]
    options = build_dataclass(options_of(config.method), config.tuner, config.method)
    config.tuner = to_dict(options)
    check_finite(dataclasses.asdict(config))
    return config


SHIPPED_CONFIGS = Path(__file__).parent.parent / "configs"


def shipped_configs() -> list[str]:
    """Names of the configs shipped with promptcl (``clinc150/hash``, ``b2n/clinc150/mpl``)."""
    paths = SHIPPED_CONFIGS.rglob("*.yaml")
    return sorted(p.relative_to(SHIPPED_CONFIGS).with_suffix("").as_posix() for p in paths)


def resolve_config(path: str | Path) -> Path:
    """The YAML file ``--config`` names: an existing file; else a shipped config named as
    ``clinc150/hash``, ``clinc150/hash.yaml`` or ``configs/clinc150/hash.yaml`` (an old path,
    ``migrate.repository_path``), from any directory. Anything else is a one-line error saying
    where it looked."""
    given = Path(path)
    if given.is_file():
        return given
    looked = f"looked for {given.resolve()}"
    if not given.is_absolute():
        name = repository_path(given.as_posix().removeprefix("./"))
        shipped = SHIPPED_CONFIGS / (name if given.suffix == ".yaml" else f"{name}.yaml")
        if shipped.is_file():
            return shipped
        looked += f" and for the shipped {shipped}"
    raise UsageError(
        f"config file {path} not found ({looked}); pass an existing YAML file or a shipped "
        "config's name (`promptcl list` shows them)"
    )


def config_name(path: Path) -> str:
    """A config file's name: a shipped config's as ``promptcl list`` shows it, else the path."""
    if path.resolve().is_relative_to(SHIPPED_CONFIGS.resolve()):
        return path.resolve().relative_to(SHIPPED_CONFIGS.resolve()).with_suffix("").as_posix()
    return str(path)


def read_yaml(path: Path) -> DictConfig:
    """A YAML file of config keys, read safely (no Python tags); one-line errors."""
    text = read_text(path)
    try:  # OmegaConf's safe loader, with its cap on alias expansion
        cfg = OmegaConf.load(io.StringIO(text))
    except OSError:  # a lone number
        cfg = None
    except yaml.YAMLError as err:
        where = getattr(err, "problem_mark", None)
        at = f" at line {where.line + 1}, column {where.column + 1}" if where else ""
        if where and "\t" in (text.splitlines() + [""])[where.line]:
            at += ", a tab: YAML indents with spaces"
        problem = getattr(err, "problem", None) or _one_line(err)
        raise UsageError(f"config file {path} is not valid YAML ({problem}{at}); fix it") from None
    if not isinstance(cfg, DictConfig):
        raise UsageError(f"config file {path} must hold key: value lines; fix it")
    return cfg


def check_finite(config: dict[str, Any], prefix: str = "") -> None:
    """No number of any config is NaN or infinite (null switches a key off where it can be)."""
    for key, value in config.items():
        if isinstance(value, dict):
            check_finite(value, f"{prefix}{key}.")
        values = value if isinstance(value, list) else [value]
        if any(isinstance(v, float) and not math.isfinite(v) for v in values):
            raise UsageError(f"bad config: {prefix}{key}={value} must be a finite number")


def build_dataclass(cls: type, options: dict[str, Any], where: str) -> Any:
    """Fill the dataclass ``cls`` from a dict, rejecting unknown keys and wrong types."""
    try:
        merged = OmegaConf.merge(OmegaConf.structured(cls), OmegaConf.create(dict(options)))
        return OmegaConf.to_object(merged)
    except OmegaConfBaseException as err:
        raise UsageError(f"bad {where} option: {_one_line(err)}") from None
    except ValueError as err:  # raised by a config's __post_init__
        raise UsageError(f"bad {where} option: {err}") from None


def to_dict(config: Any) -> dict[str, Any]:
    """A config dataclass as plain nested dicts and lists."""
    return OmegaConf.to_container(OmegaConf.structured(config), resolve=True)


def config_differences(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two config dicts (``RESUME_FREE_KEYS`` aside)."""
    keys = sorted(set(a) | set(b))
    diffs = []
    for key in keys:
        name = f"{prefix}{key}"
        va, vb = a.get(key), b.get(key)
        if isinstance(va, dict) and isinstance(vb, dict):
            diffs += config_differences(va, vb, f"{name}.")
        elif va != vb and name not in RESUME_FREE_KEYS:
            diffs.append(name)
    return diffs
