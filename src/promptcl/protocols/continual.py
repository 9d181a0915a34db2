"""The continual-learning protocol: train task after task, evaluate on every seen task.

A client of the core (promptcl.core): a unit is a task. Per task: a fresh optimiser; epochs
over the task's training data (core.loop; logits of classes outside the task masked when
train.mask_logits); the tuner's end-of-task step; then evaluation on the test samples of all
seen tasks, in batches mixed across tasks (shuffled with the run's seed), the tuner inferring
task identity per sample. Task t starts from torch.manual_seed(f(seed, t)), so a run resumed at
a task boundary repeats the unbroken run exactly (within a task, train.checkpoint_every: the
loop continues from the checkpoint's step, optimiser and random state).
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from promptcl import metrics
from promptcl.backbones import Backbone, build_backbone, widened
from promptcl.config import RunConfig, build_dataclass, load_structured, migrate, read_yaml
from promptcl.config.migrate import old_defaults
from promptcl.core import run as core
from promptcl.core.checkpoint import RunState
from promptcl.core.loop import Loop, Stage, mean_terms
from promptcl.core.rundir import RunDir
from promptcl.data import TaskStream, build_benchmark
from promptcl.data.batching import chunks_of, load_batches, make_processors
from promptcl.engine import Engine
from promptcl.errors import UsageError
from promptcl.protocols.features import FeatureCache
from promptcl.report.plots import plot_accuracy_matrix, plot_average_accuracy, plot_heatmap
from promptcl.runtime import task_seed
from promptcl.tuners import Batch, TaskData, TunerOutput, get_tuner


class Experiment(core.Protocol):
    """Everything a continual run needs, built and checked before anything is written to disk.

    ``stream`` and ``backbone``, when given, are used instead of those the config names: a
    loaded run (models/continual.py) passes its class list without samples, ``promptcl eval``
    another test set in the run's class ids."""

    kind = "continual"
    command = "run"
    classes_file = "class_order.json"
    unit = "task"

    def __init__(
        self,
        config: RunConfig,
        engine: Engine | None = None,
        stream: TaskStream | None = None,
        backbone: Backbone | None = None,
    ) -> None:
        self.config = config
        self.engine = engine or Engine(config.train)
        self.device = self.engine.device
        tuner_cls = get_tuner(config.method)
        tuner_config = build_dataclass(tuner_cls.config_class, config.tuner, config.method)
        self.stream = stream or build_benchmark(config.benchmark, config.data, config.seed)
        self.backbone = backbone or build_backbone(config.backbone, config.backbone_weights)
        if self.backbone.modality != self.stream.modality:
            raise UsageError(
                f"backbone {config.backbone} reads {self.backbone.modality} but "
                f"{config.benchmark} is {self.stream.modality} data; pick a matching backbone"
            )
        self.processors = make_processors(self.backbone, config.data)
        self.items = {
            "train": self.processors["train"].prepare(self.stream.train.items),
            "test": self.processors["test"].prepare(self.stream.test.items),
        }
        self.labels = {"train": self.stream.train.labels, "test": self.stream.test.labels}
        torch.manual_seed(config.seed)
        self.tuner = tuner_cls(tuner_config, self.backbone, self.stream.num_classes)
        self.engine.prepare(self.tuner)
        if config.train.compile:
            self.backbone.compile_blocks()
        training = self.stream.joint() if config.train.joint else self.stream
        self.training_tasks = training.tasks
        self.sample_tasks = {"train": training.train.tasks, "test": self.stream.test.tasks}
        self.loop = Loop(self.engine, config.train, config.seed)
        # frozen query features are cached per sample where inputs are not augmented
        self.caches = {}
        if self.tuner.needs_query:
            size = config.train.eval_batch_size
            for split, processor in self.processors.items():
                if not processor.augments:
                    self.caches[split] = FeatureCache(
                        self.backbone,
                        self.items[split],
                        processor.collate,
                        self.engine,
                        size,
                        self.query_autocast,
                    )

    # -- the protocol's part of a run ----------------------------------------------------------

    def classes(self) -> dict[str, Any]:
        return self.stream.describe()

    def num_units(self) -> int:
        return len(self.training_tasks)

    def run_unit(self, task: int, state: RunState) -> dict[str, Any]:
        """Train task ``task``, then evaluate on every task seen so far."""
        torch.manual_seed(task_seed(self.config.seed, task))
        start = time.perf_counter()
        if self.loop.position is None:  # else resumed within the task: restore began it
            self.tuner.begin_task(task, self.training_tasks[task])
            if self.tuner.prepares:
                self.prepare_task(task)
        trained = self.train_task(task)
        state.train_seconds += time.perf_counter() - start
        state.samples_seen += trained["samples_seen"]
        start = time.perf_counter()
        num_seen = self.stream.num_tasks if self.config.train.joint else task + 1
        result = self.evaluate(num_seen)
        state.eval_seconds += time.perf_counter() - start
        state.steps = self.loop.steps
        return {
            "task": task,
            **trained,
            **result,
            "avg_acc": metrics.average_accuracy(result["acc"]),
        }

    def report(self, row: dict[str, Any], state: RunState) -> None:
        """A finished task: a line on the terminal and a row for the loggers."""
        task_id = row["task_id_acc"]
        seconds = state.train_seconds + state.eval_seconds
        self.engine.say(
            f"task {row['task'] + 1}/{self.num_units()}: avg acc {row['avg_acc']:.2f}"
            + ("" if task_id is None else f", task-id acc {task_id:.1f}")
            + f", {seconds:.1f} s so far"
        )
        figures = {"avg_acc": row["avg_acc"], "union_acc": row["union_acc"]}
        if task_id is not None:
            figures["task_id_acc"] = task_id
        figures.update({f"acc_task{j + 1}": acc for j, acc in enumerate(row["acc"])})
        self.engine.log(figures, state.steps)

    def trained_state(self) -> dict[str, torch.Tensor]:
        return self.tuner.trained_state()

    def finished_state(self) -> dict[str, torch.Tensor]:
        return self.tuner.trained_state(finished=True)

    def restore(self, tensors: dict[str, torch.Tensor], state: RunState) -> None:
        """The tuner as it was after ``state.units_done`` tasks (and within the next one when
        the loop resumes there), from its checkpointed tensors."""
        begun = state.units_done + (0 if self.loop.position is None else 1)
        for task in range(begun):
            torch.manual_seed(task_seed(self.config.seed, task))
            self.tuner.begin_task(task, self.training_tasks[task])
        fresh = self.tuner.trained_state()
        tensors = migrate.moved_tensors(tensors, fresh)
        self.tuner.load_trained_state(migrate.added_tensors(tensors, fresh))
        self.loop.steps = state.steps

    def valid_log(self, log: list[dict[str, Any]]) -> bool:
        """Rows of per-task accuracies (numbers; union and task-id accuracy may be None)."""

        def number(value: Any) -> bool:
            return type(value) in (int, float)

        return all(
            isinstance(row.get("acc"), list)
            and all(map(number, row["acc"]))
            and all(row.get(k) is None or number(row[k]) for k in ("union_acc", "task_id_acc"))
            for row in log
        )

    def finish(self, state: RunState) -> dict[str, Any]:
        return summary_metrics(self, state)

    def plot(self, folder: Path, metrics: dict[str, Any]) -> None:
        for name, heatmap in self.tuner.heatmaps().items():
            options = {k: v for k, v in heatmap.items() if k != "matrix"}
            plot_heatmap(heatmap["matrix"], folder / f"{name}.png", **options)
        title = f"{metrics['method']} on {metrics['benchmark']} (seed {metrics['seed']})"
        plot_accuracy_matrix(metrics["acc_matrix"], folder / "acc_matrix.png", title)
        plot_average_accuracy(
            {metrics["method"]: metrics["avg_acc"]}, folder / "avg_acc.png", title
        )

    @classmethod
    def saved_config(cls, run_dir: RunDir, overrides: Sequence[str] = ()) -> RunConfig:
        """The run's config.json with keys added to promptcl since then filled with their
        defaults (a run made by an older version resumes while it matches on the keys it knew),
        then ``overrides``."""
        return load_run_config(run_dir.config, overrides)

    # -- batches -------------------------------------------------------------------------------

    def task_data(self, batches: Iterable[Batch]) -> TaskData:
        """A task's batches for ``end_task``: its forward passes shared out over the ranks and
        run in the run's precision (``TaskData.map``), its statistics in fp32."""
        engine = self.engine
        return TaskData(batches, engine.shard, engine.sum_over_ranks, engine.autocast)

    def batches(self, split: str, indices: Sequence[int], batch_size: int) -> Iterator[Batch]:
        """Batches of ``indices`` in that order; inputs are collated (decoded) in workers."""
        return self.chunk_batches(split, chunks_of(indices, batch_size))

    def chunk_batches(self, split: str, chunks: Sequence[Sequence[int]]) -> Iterator[Batch]:
        """One batch per chunk of indices. The query cache is filled for them unless it holds
        them already (with several processes, every rank must fill with the same indices)."""
        if split in self.caches:
            self.caches[split].fill([i for chunk in chunks for i in chunk])
        items, labels, processor = self.items[split], self.labels[split], self.processors[split]
        workers = self.config.data.workers
        for index, y, inputs in load_batches(
            items, labels, processor, chunks, self.device, workers
        ):
            if split in self.caches:
                query = self.caches[split].get(index).to(self.device)
            else:
                query = self.query_features(inputs)
            yield Batch(inputs, y, index, query)

    @torch.no_grad()
    def query_features(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor | None:
        """The frozen pooled feature of un-cached inputs, when the tuner needs it."""
        if not self.tuner.needs_query:
            return None
        with self.query_autocast():
            return self.backbone.features(inputs).float()

    def query_autocast(self) -> AbstractContextManager:
        """The query pass's precision (train.query_precision): the run's, or bf16 autocast. The
        pass runs under no_grad and only feeds a key match or task classifier."""
        if self.config.train.query_precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return self.engine.autocast()

    def indices_of(self, split: str, tasks: Sequence[int]) -> list[int]:
        """Positions of the samples of ``tasks`` in ``split``."""
        wanted = set(tasks)
        return [i for i, task in enumerate(self.sample_tasks[split]) if task in wanted]

    # -- one task ------------------------------------------------------------------------------

    def setup_training(self, task: int):
        """Task ``task``'s training on the engine (after begin_task): the loss module (logits
        outside the task masked when train.mask_logits, the tuner's loss terms) and a fresh
        optimiser over the tuner's parameter groups; None when nothing trains."""
        cfg, tuner = self.config.train, self.tuner
        # a group's "lr_scale" multiplies train.lr (per-expert rates in Hash, HiDe's head rate)
        groups = tuner.param_groups() if tuner.trains else []
        outside = torch.ones(self.stream.num_classes, dtype=torch.bool, device=self.device)
        if cfg.mask_logits:
            outside[list(self.training_tasks[task])] = False
        else:  # every class seen so far competes
            outside[[c for seen in self.training_tasks[: task + 1] for c in seen]] = False
        return self.loop.setup(tuner, self.loss_terms(task, outside), groups)

    def prepare_task(self, task: int) -> None:
        """The tuner's look at task ``task``'s training data before training it (batches as
        end_task's: un-shuffled, of train.eval_batch_size)."""
        self.engine.same_random_state()
        indices = self.indices_of("train", [task])
        batches = self.batches("train", indices, self.config.train.eval_batch_size)
        self.tuner.prepare_task(task, self.training_tasks[task], self.task_data(batches))

    def train_task(self, task: int) -> dict[str, Any]:
        """Train task ``task`` (after begin_task), then the tuner's end of task. Returns the
        task's training samples, epochs, samples seen (samples x epochs) and mean losses."""
        cfg, tuner = self.config.train, self.tuner
        indices = self.indices_of("train", [task])
        if "train" in self.caches:  # every rank fills for the whole task (sharded inside)
            self.caches["train"].fill(indices)
        training = self.setup_training(task)
        epochs, steps = 0, []
        if training is not None:
            stage = Stage(
                task,
                indices,
                lambda chunks: self.chunk_batches("train", chunks),
                f"task {task + 1}/{len(self.training_tasks)}",
                {"task": task},
                tuner.after_step,
            )
            tuner.train()
            epochs, steps = cfg.epochs, self.loop.train(stage, range(cfg.epochs), training).steps
        tuner.eval()
        self.engine.same_random_state()
        batches = self.batches("train", indices, cfg.eval_batch_size)
        tuner.end_task(task, self.training_tasks[task], self.task_data(batches))
        return {
            "train_samples": len(indices),
            "epochs": epochs,
            "samples_seen": len(indices) * epochs,
            "losses": mean_terms(steps),
        }

    def loss_terms(self, task: int, outside: torch.Tensor):
        """Loss terms of a step on (this rank's batch, its share of the global batch)."""

        def terms_of(item: tuple[Batch, float]) -> dict[str, torch.Tensor]:
            batch, share = item
            out = self.tuner(batch, task=torch.full_like(batch.labels, task))
            logits = widened(out.logits).masked_fill(outside, float("-inf"))
            terms = {"ce": F.cross_entropy(logits, batch.labels)}
            terms.update(self.tuner.loss_terms(batch, out, task))
            return {name: value * share for name, value in terms.items()}

        return terms_of

    # -- evaluation --------------------------------------------------------------------------

    def unseen(self, num_seen: int) -> torch.Tensor:
        """(C,) True for the classes outside the first ``num_seen`` tasks."""
        mask = torch.ones(self.stream.num_classes, dtype=torch.bool, device=self.device)
        mask[[c for classes in self.stream.tasks[:num_seen] for c in classes]] = False
        return mask

    def infer(self, batch: Batch, unseen: torch.Tensor) -> tuple[TunerOutput, torch.Tensor]:
        """The evaluation step of one batch, the same for ``evaluate`` and ``predict``: the
        tuner's output (task identity inferred per sample) and its float logits with the
        ``unseen`` classes at -inf."""
        with self.engine.autocast():
            out = self.tuner(batch)
        return out, widened(out.logits).masked_fill(unseen, float("-inf"))

    def test_chunks(self, num_seen: int) -> list[list[int]]:
        """The test samples of the first ``num_seen`` tasks in batches mixed across tasks (by
        length), or (a leaking task inference, flagged) task-pure batches."""
        size = self.config.train.eval_batch_size
        if not self.tuner.leaks_task_identity:
            indices = self.indices_of("test", range(num_seen))
            random.Random(self.config.seed).shuffle(indices)
            # shortest first, the seeded order among equal lengths: text batches pad less, and a
            # sample's outputs do not depend on its batch's padding (tests/test_learner.py)
            length, items = self.processors["test"].length, self.items["test"]
            indices.sort(key=lambda i: length(items[i]))
            return chunks_of(indices, size)
        chunks = []
        for task in range(num_seen):
            pure = self.indices_of("test", [task])
            random.Random(self.config.seed).shuffle(pure)
            chunks += chunks_of(pure, size)
        return chunks

    @torch.no_grad()
    def evaluate(self, num_seen: int) -> dict[str, Any]:
        """Accuracy per seen task on mixed batches; task identity inferred per sample."""
        chunks = self.test_chunks(num_seen)
        if "test" in self.caches:
            self.caches["test"].fill([i for chunk in chunks for i in chunk])
        unseen = self.unseen(num_seen)
        tasks = torch.as_tensor(self.sample_tasks["test"])

        def count(batch: Batch) -> torch.Tensor:
            """Per seen task: samples, right class, samples with a task prediction, right task."""
            out, logits = self.infer(batch, unseen)
            counts = torch.zeros(4, num_seen, dtype=torch.long)
            true_task = tasks[batch.index.cpu()]
            ones = torch.ones_like(true_task)
            counts[0].index_add_(0, true_task, ones)
            counts[1].index_add_(
                0, true_task, (logits.argmax(1).cpu() == batch.labels.cpu()).long()
            )
            if out.task_pred is not None:
                counts[2].index_add_(0, true_task, ones)
                counts[3].index_add_(0, true_task, (out.task_pred.cpu() == true_task).long())
            return counts

        self.tuner.eval()
        zeros = torch.zeros(4, num_seen, dtype=torch.long)
        batches = lambda chunks: self.chunk_batches("test", chunks)  # noqa: E731
        counted = self.loop.evaluate(chunks, batches, count, zeros, f"evaluate {num_seen} task(s)")
        total, correct, inferred, right_task = counted.tolist()
        return {
            "acc": [metrics.accuracy(c, n) for c, n in zip(correct, total, strict=True)],
            "union_acc": metrics.union_accuracy(correct, total),
            "task_id_acc": metrics.task_identity_accuracy(right_task, inferred)
            if sum(inferred) and not self.config.train.joint
            else None,
        }


def run(
    config: RunConfig, out: str | Path, resume: bool = False, stop_after: int | None = None
) -> dict[str, Any] | None:
    """Run (or resume) a continual experiment into ``out``. Returns metrics.json's content, or
    None when ``stop_after`` tasks were done and the run was left to be resumed."""
    return core.run(Experiment, config, out, resume, stop_after)


def summary_metrics(exp: Experiment, state: RunState) -> dict[str, Any]:
    """metrics.json of a continual run: the accuracy matrix and its metrics (promptcl.metrics),
    union and task-identity accuracy after the last task, cost and the tuner's report."""
    config, T = exp.config, exp.stream.num_tasks
    rows = [row["acc"] for row in state.log]
    last = state.log[-1]
    if config.train.joint:  # one training task, evaluated on every task of the stream
        acc = rows[-1]
        faa = metrics.average_accuracy(acc)
        figures = {"faa": faa, "caa": faa, "fm": None, "bwt": None, "avg_acc": [faa]}
        matrix = [acc]
    else:
        figures = metrics.summarize(rows)
        matrix = [row + [None] * (T - len(row)) for row in rows]
    return {
        **exp.run_fields(),
        "num_tasks": T,
        "joint": config.train.joint,
        "train_per_class": config.data.train_per_class,
        "test_per_class": config.data.test_per_class,
        "eval_split": config.data.eval_split,
        "acc_matrix": matrix,
        **figures,
        "union_acc": last["union_acc"],
        "task_id_acc": last["task_id_acc"],
        "trainable_params": exp.tuner.num_trained_parameters(),
        "train_seconds": state.train_seconds,
        "eval_seconds": state.eval_seconds,
        "train_samples_per_s": state.samples_seen / state.train_seconds
        if state.samples_seen
        else None,
        "leaks_task_identity": exp.tuner.leaks_task_identity,
        **exp.tuner.report(),
        **exp.engine.describe(),
        "promptcl_version": state.promptcl_version,
    }


def tuner_options(method: str) -> type:
    """The options dataclass of a continual method."""
    return get_tuner(method).config_class


def load_config(
    path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()
) -> RunConfig:
    """Defaults, then the YAML file at ``path``, then ``key=value`` overrides, type checked;
    ``tuner`` holds every option of the chosen method, validated."""
    return load_structured(RunConfig, path, overrides, "run", tuner_options)


def load_run_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    """A run directory's config.json read as that run was made (``migrate.old_defaults``), then
    ``overrides``."""
    overrides = [*old_defaults(read_yaml(Path(path))), *overrides]
    return load_structured(RunConfig, path, overrides, "run", tuner_options, run_dir=True)
