"""The loggers of ``train.logger``: Fabric's own (csv, tensorboard) and two of ours on Fabric's
``Logger`` interface, Weights & Biases and MLflow. Each gets the same series (a row per
optimisation step, a row per finished unit), the run's config at the start and its final
figures (``final/...``) at the end; rank 0 writes them.

wandb: a run in project ``$WANDB_PROJECT`` (default promptcl) named after the run directory,
its files under OUT/logs/wandb; ``WANDB_MODE=offline`` keeps them there (``wandb sync`` uploads
them later). mlflow: a run in experiment ``$MLFLOW_EXPERIMENT_NAME`` (default promptcl) of the
tracking store ``$MLFLOW_TRACKING_URI`` (a server, a database, or by default the file store
OUT/logs/mlruns), its config as params with dotted keys (``train.lr``: the --set keys).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lightning_fabric.loggers import Logger
from lightning_fabric.utilities.rank_zero import rank_zero_only

from promptcl.errors import UsageError

LOGGERS = ("none", "csv", "tensorboard", "wandb", "mlflow")
EXTRAS = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}  # the pip extras


def flat(data: Mapping[str, Any], sep: str, prefix: str = "") -> dict[str, Any]:
    """Nested mappings as one level: {"train": {"lr": 0.1}} -> {"train.lr": 0.1} (sep ".")."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, Mapping):
            out.update(flat(value, sep, f"{prefix}{key}{sep}"))
        else:
            out[f"{prefix}{key}"] = value
    return out


def final_figures(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The numbers of metrics.json (nested ones by path; lists such as the accuracy matrix
    left out) as ``final/NAME``, for the loggers."""
    return {
        f"final/{key}": float(value)
        for key, value in flat(metrics, "/").items()
        if type(value) in (int, float)
    }


class WandbLogger(Logger):
    """A Weights & Biases run, started at the first thing logged (on rank 0 only)."""

    def __init__(self, root: Path) -> None:
        import wandb

        self._wandb = wandb
        self._root = root
        self._run: Any = None

    @property
    def name(self) -> str:
        return "wandb"

    @property
    def version(self) -> str | None:
        return None if self._run is None else self._run.id

    @property
    def run(self) -> Any:
        if self._run is None:
            folder = self._root / "logs"
            folder.mkdir(parents=True, exist_ok=True)
            project = os.environ.get("WANDB_PROJECT", "promptcl")
            self._run = self._wandb.init(dir=folder, project=project, name=self._root.name)
        return self._run

    @rank_zero_only
    def log_hyperparams(self, params: dict[str, Any], *args: Any, **kwargs: Any) -> None:
        self.run.config.update(params, allow_val_change=True)

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.run.log(dict(metrics), step=step)

    @rank_zero_only
    def finalize(self, status: str) -> None:
        if self._run is not None:
            self._run.finish(exit_code=0 if status == "success" else 1)
            self._run = None


class MLflowLogger(Logger):
    """An MLflow run, created at the first thing logged (on rank 0 only)."""

    def __init__(self, root: Path) -> None:
        from mlflow.tracking import MlflowClient

        uri = os.environ.get("MLFLOW_TRACKING_URI") or (root / "logs" / "mlruns").resolve().as_uri()
        if uri.startswith("file:") or "://" not in uri:
            # MLflow 3 asks file stores to opt in; ours is the default, theirs a choice
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self._client = MlflowClient(tracking_uri=uri)
        self._root = root
        self._run_id: str | None = None

    @property
    def name(self) -> str:
        return "mlflow"

    @property
    def version(self) -> str | None:
        return self._run_id

    @property
    def run_id(self) -> str:
        if self._run_id is None:
            name = os.environ.get("MLFLOW_EXPERIMENT_NAME", "promptcl")
            experiment = self._client.get_experiment_by_name(name)
            experiment_id = (
                experiment.experiment_id if experiment else self._client.create_experiment(name)
            )
            run = self._client.create_run(experiment_id, run_name=self._root.name)
            self._run_id = run.info.run_id
        return self._run_id

    @rank_zero_only
    def log_hyperparams(self, params: dict[str, Any], *args: Any, **kwargs: Any) -> None:
        from mlflow.entities import Param

        items = [Param(key, str(value)) for key, value in flat(params, ".").items()]
        for start in range(0, len(items), 100):  # MLflow takes at most 100 params a batch
            self._client.log_batch(self.run_id, params=items[start : start + 100])

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        rows = [Metric(key, float(value), now, step or 0) for key, value in metrics.items()]
        self._client.log_batch(self.run_id, metrics=rows)

    @rank_zero_only
    def finalize(self, status: str) -> None:
        if self._run_id is not None:
            ended = "FINISHED" if status == "success" else "FAILED"
            self._client.set_terminated(self._run_id, ended)
            self._run_id = None


def build_loggers(kind: str, root: Path | None) -> list[Logger]:
    """The loggers of ``train.logger`` writing under ``root`` (none without a root); a logger
    whose package is missing is a one-line error naming the extra that installs it."""
    if kind == "none" or root is None:
        return []
    try:
        if kind == "csv":
            from lightning_fabric.loggers import CSVLogger

            return [CSVLogger(root, name="logs")]
        if kind == "tensorboard":
            from lightning_fabric.loggers import TensorBoardLogger

            return [TensorBoardLogger(root, name="logs", default_hp_metric=False)]
        return [WandbLogger(root) if kind == "wandb" else MLflowLogger(root)]
    except ModuleNotFoundError:
        raise UsageError(
            f"train.logger={kind} needs its package: pip install 'promptcl[{EXTRAS[kind]}]'"
        ) from None
