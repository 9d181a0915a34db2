"""The run directory: what a finished (or interrupted) run leaves behind.

config.json        resolved configuration
class_order.json   class order and task split
log.jsonl          one line per finished task
metrics.json       final figures (see ``summary_metrics``)
acc_matrix.png     accuracy matrix heatmap;  avg_acc.png  average accuracy after each task
checkpoint/        trained tensors + JSON state (one checksummed safetensors file) at the last
                   task boundary;  .lock  while a run writes here
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from promptcl.files import dumps, write_json, write_text
from promptcl.report.plots import plot_accuracy_matrix, plot_average_accuracy, plot_heatmap


class RunDir:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.checkpoint = self.path / "checkpoint"

    def create(self, config: dict[str, Any], stream: dict[str, Any]) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        write_json(self.path / "config.json", config)
        write_json(self.path / "class_order.json", stream)

    def fingerprint(self, stream: dict[str, Any]) -> str:
        """A digest of config.json as written and of the task stream: a checkpoint holds it, and
        resume refuses a run whose config.json was edited or whose data changed."""
        digest = hashlib.sha256((self.path / "config.json").read_bytes())
        digest.update(dumps(stream).encode())
        return digest.hexdigest()

    def is_run(self) -> bool:
        return (self.path / "config.json").is_file()

    def write_log(self, rows: list[dict[str, Any]]) -> None:
        write_text(self.path / "log.jsonl", "".join(dumps(row) + "\n" for row in rows))

    def write_results(
        self, metrics: dict[str, Any], heatmaps: dict[str, dict[str, Any]] | None = None
    ) -> None:
        write_json(self.path / "metrics.json", metrics)
        for name, heatmap in (heatmaps or {}).items():
            options = {k: v for k, v in heatmap.items() if k != "matrix"}
            plot_heatmap(heatmap["matrix"], self.path / f"{name}.png", **options)
        title = f"{metrics['method']} on {metrics['benchmark']} (seed {metrics['seed']})"
        plot_accuracy_matrix(metrics["acc_matrix"], self.path / "acc_matrix.png", title)
        plot_average_accuracy(
            {metrics["method"]: metrics["avg_acc"]}, self.path / "avg_acc.png", title
        )
