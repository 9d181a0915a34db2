"""A continual run loaded for use, as it was at its last task boundary: ``promptcl.load`` of a
``promptcl run`` directory, and ``promptcl eval`` on another labelled test set.

Nothing but the run directory is read: config.json rebuilds the backbone and the tuner,
class_order.json gives the class names in label order and the classes of each task, and the
checkpoint gives the trained tensors, the number of finished tasks and (since promptcl wrote
it) the version of promptcl that wrote them. The checkpoint's fingerprint must match
config.json and class_order.json, and its tensors the tuner that config.json builds.

Prediction and evaluation run ``Experiment.infer``, the evaluation step of ``promptcl run``:
logits over the classes of the finished tasks, task identity inferred per sample by the tuner.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from promptcl.backbones import build_backbone
from promptcl.config import RunConfig
from promptcl.core.checkpoint import RunState, load_checkpoint
from promptcl.core.loop import method_tensors
from promptcl.core.rundir import RunDir
from promptcl.data import Split, TaskStream, build_benchmark
from promptcl.data.batching import chunks_of, load_batches
from promptcl.engine import Engine
from promptcl.errors import UsageError
from promptcl.models.base import (
    Prediction,
    TrainedModel,
    inference_train_config,
    read_json_file,
)
from promptcl.protocols.continual import Experiment, load_run_config
from promptcl.tuners import Batch

# keys ``promptcl eval --set`` may change: the test set and how it is read, never the model
EVAL_KEYS = ("benchmark", "data.", "train.eval_batch_size", "train.precision")
LOAD_HINT = "pass the directory of a run that finished a task, or restore the file from a copy"


@dataclass
class SavedRun:
    """What a continual run directory holds, checked: its config (with any ``eval`` keys
    changed), the trained tensors and state of its last finished task, its class list."""

    path: Path
    config: RunConfig
    tensors: dict[str, torch.Tensor]
    state: RunState
    class_names: list[str]
    tasks: list[list[str]]  # the class names of each task

    @property
    def tasks_done(self) -> int:
        return self.state.units_done

    @property
    def task_ids(self) -> list[list[int]]:
        ids = {name: i for i, name in enumerate(self.class_names)}
        return [[ids[name] for name in task] for task in self.tasks]

    def experiment(self, engine: Engine, stream: TaskStream | None = None) -> Experiment:
        """The run's Experiment restored to its last task boundary, reading ``stream`` (default:
        the run's classes without samples)."""
        backbone = None
        if stream is None:
            backbone = build_backbone(self.config.backbone, self.config.backbone_weights)
            nothing = Split([], [], [])
            stream = TaskStream(
                self.config.benchmark,
                self.class_names,
                self.task_ids,
                nothing,
                nothing,
                backbone.modality,
            )
        exp = Experiment(self.config, engine, stream, backbone)
        exp.restore(self.tensors, self.state)
        exp.tuner.eval()
        return exp


def read_run(path: Path, overrides: Sequence[str] = ()) -> SavedRun:
    """The run directory at ``path``, checked; ``overrides`` are ``promptcl eval``'s --set."""
    run_dir = RunDir(path)
    if not run_dir.is_run():
        raise UsageError(f"{path} is not a promptcl run directory (no config.json); check the path")
    if run_dir.kind() != Experiment.kind:
        raise UsageError(
            f"{path} is a {run_dir.kind()} run; evaluate it on other data sets with promptcl b2n "
            f"--prompts {path} --set transfer=[NAME,...]"
        )
    for item in overrides:
        key = item.partition("=")[0]
        if not any(key == k or (k.endswith(".") and key.startswith(k)) for k in EVAL_KEYS):
            raise UsageError(
                f"--set {item!r}: eval changes only benchmark, data.* and train.eval_batch_size "
                "or train.precision; the other keys belong to the trained run"
            )
    config = load_run_config(run_dir.config, overrides)
    order = read_json_file(path / "class_order.json", "the class order and tasks")
    order = order if isinstance(order, dict) else {}
    names, tasks = order.get("class_order"), order.get("tasks")
    well_formed = (
        isinstance(names, list)
        and all(isinstance(name, str) for name in names)
        and len(set(names)) == len(names)
        and isinstance(tasks, list)
        and all(isinstance(t, list) and all(n in names for n in t) for t in tasks)
    )
    if not well_formed:
        raise UsageError(f"{path / 'class_order.json'} is not a promptcl class order; {LOAD_HINT}")
    saved = load_checkpoint(run_dir.checkpoint, LOAD_HINT)
    if saved is None or saved[1].units_done < 1:
        raise UsageError(
            f"{path} has not finished a task yet (no checkpoint); wait for its first task, or "
            f"continue it with promptcl run --resume {path}"
        )
    tensors, state = saved
    if state.within_unit():
        raise UsageError(
            f"{path} is in the middle of task {state.units_done + 1} (a train.checkpoint_every "
            f"checkpoint); wait for the task's end, or continue it with promptcl run --resume "
            f"{path}"
        )
    trained_tasks = 1 if config.train.joint else len(tasks)
    if not run_dir.matches(state, order) or state.units_done > trained_tasks:
        raise UsageError(
            f"{path}: config.json or class_order.json changed after the checkpoint was written; "
            "restore them from a copy of the run"
        )
    return SavedRun(path, config, method_tensors(tensors), state, names, tasks)


class ContinualModel(TrainedModel):
    """A ``promptcl run`` directory loaded for use (see the module docstring)."""

    def __init__(self, saved: SavedRun, exp: Experiment) -> None:
        self.path = saved.path
        self.exp = exp
        self.class_names = saved.class_names
        self.tasks = saved.tasks
        self.tasks_done = saved.tasks_done
        self.version = saved.state.promptcl_version
        self.modality = exp.backbone.modality
        # a joint run learned every class as one task: it names no task of the stream
        self.num_seen = exp.stream.num_tasks if exp.config.train.joint else self.tasks_done
        self.names_task = not exp.config.train.joint

    @torch.no_grad()
    def predict(
        self,
        inputs: Sequence[Any],
        batch_size: int | None = None,
        class_names: Sequence[str] | None = None,
    ) -> list[Prediction]:
        """Classify among the classes of the finished tasks, as the run's evaluation does;
        ``task`` is the task the tuner inferred (None for methods that infer none)."""
        exp = self.exp
        if class_names is not None:
            raise UsageError(
                "class_names is for b2n runs (dual encoders); a continual run's head scores the "
                "classes it learned"
            )
        if exp.tuner.leaks_task_identity:
            raise UsageError(
                f"{self.path} infers one task per task-pure batch (it leaks task identity), "
                "which new inputs cannot give; train with a per-sample task inference"
            )
        size = exp.config.train.eval_batch_size if batch_size is None else batch_size
        if size < 1:
            raise UsageError(f"batch size {size} must be >= 1")
        processor = exp.processors["test"]
        items = processor.prepare(self.check_inputs(inputs))
        unseen = exp.unseen(self.num_seen)
        results = []
        chunks = chunks_of(range(len(items)), size)
        unknown = [-1] * len(items)  # no labels: Batch.labels only gives the batch size
        for index, y, batch in load_batches(items, unknown, processor, chunks, exp.device):
            out, logits = exp.infer(Batch(batch, y, index, exp.query_features(batch)), unseen)
            label = logits.argmax(dim=1)
            score = logits.softmax(dim=1).gather(1, label[:, None])[:, 0]
            tasks = out.task_pred if out.task_pred is not None and self.names_task else None
            for i, (c, p) in enumerate(zip(label.tolist(), score.tolist(), strict=True)):
                task = None if tasks is None else int(tasks[i])
                results.append(Prediction(self.class_names[c], p, task))
        return results


def load_continual_run(path: Path, device: str | torch.device | None = None) -> ContinualModel:
    """``promptcl.load`` of a ``promptcl run`` directory."""
    saved = read_run(path)
    engine = Engine(inference_train_config(saved.config.train, device))
    return ContinualModel(saved, saved.experiment(engine))


def in_run_classes(
    stream: TaskStream, class_names: list[str], tasks: list[list[str]]
) -> TaskStream:
    """``stream``'s test samples in the run's class ids and tasks (no training samples), or a
    one-line error listing the class names that do not match the run's.

    A sample's task is the run's task of its class; where the run's tasks share classes
    (text4's star ratings), the stream's own task, which needs the run's task split."""
    theirs, ours = set(stream.class_names), set(class_names)
    if theirs != ours:
        parts = [
            f"{what}: {shortlist(sorted(names))}"
            for what, names in (("not in the run", theirs - ours), ("missing", ours - theirs))
            if names
        ]
        raise UsageError(
            f"the classes of {stream.name} do not match the run's ({'; '.join(parts)}); "
            "evaluate on a test set with the run's class names"
        )
    ids = {name: i for i, name in enumerate(class_names)}
    labels = [ids[stream.class_names[y]] for y in stream.test.labels]
    own_split = [[stream.class_names[c] for c in task] for task in stream.tasks] == tasks
    owners: dict[int, list[int]] = {}
    for t, task in enumerate(tasks):
        for name in task:
            owners.setdefault(ids[name], []).append(t)
    shared = sorted(class_names[c] for c, ts in owners.items() if len(ts) > 1)
    if shared and not own_split:
        raise UsageError(
            f"classes {shortlist(shared)} belong to several of the run's tasks, so a sample's "
            "task comes from the test set's split: set the data keys as the run did"
        )
    sample_tasks = stream.test.tasks if own_split else [owners[y][0] for y in labels]
    test = Split(stream.test.items, labels, list(sample_tasks))
    task_ids = [[ids[name] for name in task] for task in tasks]
    return TaskStream(stream.name, class_names, task_ids, Split([], [], []), test, stream.modality)


def shortlist(names: list[str], most: int = 5) -> str:
    more = f" and {len(names) - most} more" if len(names) > most else ""
    return ", ".join(map(repr, names[:most])) + more


def evaluate_run(
    path: Path, overrides: Sequence[str] = (), device: str | torch.device | None = None
) -> dict[str, Any]:
    """``promptcl eval``: the run at ``path`` evaluated as ``promptcl run`` evaluates (mixed
    batches, task identity inferred per sample) on the test set its config names with
    ``overrides`` applied; the figures of the run's last log row, for that test set."""
    saved = read_run(path, overrides)
    config = saved.config
    stream = build_benchmark(config.benchmark, config.data, config.seed)
    engine = Engine(inference_train_config(config.train, device))
    exp = saved.experiment(engine, in_run_classes(stream, saved.class_names, saved.tasks))
    num_seen = exp.stream.num_tasks if config.train.joint else saved.tasks_done
    result = exp.evaluate(num_seen)
    return {
        "run": str(path),
        "method": config.method,
        "benchmark": config.benchmark,
        "eval_split": config.data.eval_split,
        "test_samples": len(exp.indices_of("test", range(num_seen))),
        "tasks_seen": num_seen,
        "avg_acc": sum(result["acc"]) / num_seen,
        **result,
        "leaks_task_identity": exp.tuner.leaks_task_identity,
        "promptcl_version": saved.state.promptcl_version,
    }
