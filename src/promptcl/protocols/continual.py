"""The continual-learning loop: train task after task, evaluate on every seen task.

Per task: a fresh optimiser; epochs over the task's training data (logits of classes outside
the task masked when train.mask_logits); the tuner's end-of-task step; then evaluation on the
test samples of all seen tasks, in batches mixed across tasks (shuffled with the run's seed),
the tuner inferring task identity per sample. Task t starts from torch.manual_seed(f(seed, t)),
so a run resumed at a task boundary repeats the unbroken run exactly.
"""

from __future__ import annotations

import random
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from promptcl import metrics
from promptcl.backbones import Backbone, build_backbone
from promptcl.config import (
    RunConfig,
    build_dataclass,
    config_differences,
    load_structured,
    read_yaml,
    to_dict,
)
from promptcl.config.migrate import old_defaults
from promptcl.core.checkpoint import load_checkpoint, save_checkpoint
from promptcl.core.rundir import RunDir
from promptcl.data import TaskStream, build_benchmark
from promptcl.data.batching import collated, cut, make_processors
from promptcl.engine import Engine
from promptcl.errors import UsageError
from promptcl.files import check_out, run_lock
from promptcl.protocols.features import FeatureCache
from promptcl.runtime import (
    epoch_order,
    make_optimizer,
    optimisation_steps,
    set_epoch_lr,
    task_seed,
)
from promptcl.tuners import Batch, TaskData, TunerOutput, get_tuner
from promptcl.version import __version__


class Experiment:
    """Everything a run needs, built and checked before anything is written to disk.

    ``stream`` and ``backbone``, when given, are used instead of those the config names: a
    loaded run (models/continual.py) passes its class list without samples, ``promptcl eval``
    another test set in the run's class ids."""

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
        # frozen query features are cached per sample where inputs are not augmented
        self.steps = 0  # optimisation steps so far (the loggers' x axis)
        self.caches = {}
        if tuner_cls.needs_query:
            size = config.train.eval_batch_size
            for split, processor in self.processors.items():
                if not processor.augments:
                    self.caches[split] = FeatureCache(
                        self.backbone, self.items[split], processor.collate, self.engine, size
                    )

    def restore(self, tensors: dict[str, torch.Tensor], tasks_done: int) -> None:
        """The tuner as it was after ``tasks_done`` tasks, from its checkpointed tensors."""
        for task in range(tasks_done):
            torch.manual_seed(task_seed(self.config.seed, task))
            self.tuner.begin_task(task, self.training_tasks[task])
        self.tuner.load_trained_state(tensors)

    def config_dict(self) -> dict[str, Any]:
        return to_dict(self.config)

    # -- batches -------------------------------------------------------------------------------

    def task_data(self, batches: Iterable[Batch]) -> TaskData:
        """A task's batches for ``end_task``: its forward passes shared out over the ranks and
        run in the run's precision (``TaskData.map``), its statistics in fp32."""
        engine = self.engine
        return TaskData(batches, engine.shard, engine.sum, engine.autocast)

    def batches(self, split: str, indices: Sequence[int], batch_size: int) -> Iterator[Batch]:
        """Batches of ``indices`` in that order; inputs are collated (decoded) in workers."""
        return self.chunk_batches(split, cut(indices, batch_size))

    def chunk_batches(self, split: str, chunks: Sequence[Sequence[int]]) -> Iterator[Batch]:
        """One batch per chunk of indices. The query cache is filled for them unless it holds
        them already (with several processes, every rank must fill with the same indices)."""
        if split in self.caches:
            self.caches[split].fill([i for chunk in chunks for i in chunk])
        items, labels, processor = self.items[split], self.labels[split], self.processors[split]
        workers = self.config.data.workers
        for index, y, inputs in collated(items, labels, processor, chunks, self.device, workers):
            if split in self.caches:
                query = self.caches[split].get(index).to(self.device)
            else:
                query = self.query(inputs)
            yield Batch(inputs, y, index, query)

    def query(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor | None:
        """The frozen pooled feature of un-cached inputs, when the tuner needs it."""
        if not self.tuner.needs_query:
            return None
        with self.engine.autocast():
            return self.backbone.features(inputs).float()

    def indices_of(self, split: str, tasks: Sequence[int]) -> list[int]:
        """Positions of the samples of ``tasks`` in ``split``."""
        wanted = set(tasks)
        return [i for i, task in enumerate(self.sample_tasks[split]) if task in wanted]

    # -- one task ------------------------------------------------------------------------------

    def trainer(self, task: int) -> tuple[torch.nn.Module, torch.optim.Optimizer] | None:
        """Task ``task``'s training step on the engine (after begin_task): the loss module
        (logits outside the task masked when train.mask_logits, the tuner's loss terms) and a
        fresh optimiser over the tuner's parameter groups; None when nothing trains."""
        cfg, tuner = self.config.train, self.tuner
        # a group's "lr_scale" multiplies train.lr (per-expert rates in Hash, HiDe's head rate)
        groups = tuner.param_groups() if tuner.trains else []
        if not groups or cfg.epochs == 0:
            return None
        outside = torch.ones(self.stream.num_classes, dtype=torch.bool, device=self.device)
        if cfg.mask_logits:
            outside[list(self.training_tasks[task])] = False
        else:  # every class seen so far competes
            outside[[c for seen in self.training_tasks[: task + 1] for c in seen]] = False
        return self.engine.setup(tuner, self.loss_terms(task, outside), make_optimizer(cfg, groups))

    def train_task(self, task: int) -> dict[str, Any]:
        cfg, tuner = self.config.train, self.tuner
        classes = self.training_tasks[task]
        indices = self.indices_of("train", [task])
        sums: dict[str, float] = defaultdict(float)
        steps = 0
        if "train" in self.caches:  # every rank fills for the whole task (sharded inside)
            self.caches["train"].fill(indices)
        trainer = self.trainer(task)
        if trainer is not None:
            step, optimizer = trainer
            tuner.train()
            for epoch in range(cfg.epochs):
                lr = set_epoch_lr(optimizer, cfg, epoch)
                order = epoch_order(len(indices), self.config.seed, task, epoch)
                shuffled = [indices[i] for i in order]
                for terms in self.train_epoch(task, epoch, shuffled, step, optimizer):
                    for name, value in terms.items():
                        sums[name] += value
                    steps += 1
                    self.steps += 1
                    self.engine.log({"task": task, "epoch": epoch, "lr": lr, **terms}, self.steps)
        tuner.eval()
        self.engine.same_random_state()
        batches = self.batches("train", indices, cfg.eval_batch_size)
        tuner.end_task(task, classes, self.task_data(batches))
        return {
            "train_samples": len(indices) * (cfg.epochs if trainer else 0),
            "losses": {name: total / steps for name, total in sums.items()} if steps else {},
        }

    def loss_terms(self, task: int, outside: torch.Tensor):
        """Loss terms of a step on (this rank's batch, its share of the global batch)."""

        def terms_of(item: tuple[Batch, float]) -> dict[str, torch.Tensor]:
            batch, share = item
            out = self.tuner(batch, task=torch.full_like(batch.labels, task))
            logits = out.logits.float().masked_fill(outside, float("-inf"))
            terms = {"ce": F.cross_entropy(logits, batch.labels)}
            terms.update(self.tuner.loss_terms(batch, out, task))
            return {name: value * share for name, value in terms.items()}

        return terms_of

    def train_epoch(
        self,
        task: int,
        epoch: int,
        indices: list[int],
        step: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
    ) -> Iterator[dict[str, float]]:
        """One pass over ``indices`` in global batches of train.batch_size, this rank taking
        its share of each; yields the loss terms of each step."""
        cfg = self.config.train
        shares = self.engine.global_batches(cut(indices, cfg.batch_size))
        batches = self.chunk_batches("train", [chunk for chunk, _ in shares])
        items = ((b, len(chunk) / n) for b, (chunk, n) in zip(batches, shares, strict=True))
        yield from optimisation_steps(
            items,
            step,
            optimizer,
            engine=self.engine,
            grad_clip=cfg.grad_clip,
            where=f"task {task + 1}/{len(self.training_tasks)} epoch {epoch + 1}/{cfg.epochs}",
            progress=cfg.progress,
            total=len(shares),
        )

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
        return out, out.logits.float().masked_fill(unseen, float("-inf"))

    @torch.no_grad()
    def evaluate(self, num_seen: int) -> dict[str, Any]:
        """Accuracy per seen task on mixed batches; task identity inferred per sample."""
        size = self.config.train.eval_batch_size
        if self.tuner.leaks_task_identity:  # task-pure batches: leaks task identity, flagged
            chunks = []
            for task in range(num_seen):
                pure = self.indices_of("test", [task])
                random.Random(self.config.seed).shuffle(pure)
                chunks += cut(pure, size)
        else:
            indices = self.indices_of("test", range(num_seen))
            random.Random(self.config.seed).shuffle(indices)
            chunks = cut(indices, size)
        unseen = self.unseen(num_seen)
        # per seen task: samples, right class, samples with a task prediction, right task
        counts = torch.zeros(4, num_seen, dtype=torch.long)
        if "test" in self.caches:
            self.caches["test"].fill([i for chunk in chunks for i in chunk])
        chunks = self.engine.shard(chunks)  # whole batches round-robin to the ranks
        self.tuner.eval()
        for batch in tqdm(
            self.chunk_batches("test", chunks),
            total=len(chunks),
            desc=f"evaluate {num_seen} task(s)",
            disable=None if self.config.train.progress else True,
            leave=False,
        ):
            out, logits = self.infer(batch, unseen)
            pred = logits.argmax(dim=1).cpu()
            true_task = torch.as_tensor([self.sample_tasks["test"][i] for i in batch.index])
            counts[0].index_add_(0, true_task, torch.ones_like(true_task))
            counts[1].index_add_(0, true_task, (pred == batch.labels.cpu()).long())
            if out.task_pred is not None:
                counts[2].index_add_(0, true_task, torch.ones_like(true_task))
                counts[3].index_add_(0, true_task, (out.task_pred.cpu() == true_task).long())
        total, correct, inferred, right_task = self.engine.sum(counts.to(self.device)).tolist()
        return {
            "acc": [metrics.accuracy(c, n) for c, n in zip(correct, total, strict=True)],
            "union_acc": metrics.union_accuracy(correct, total),
            "task_id_acc": metrics.accuracy(sum(right_task), sum(inferred))
            if sum(inferred) and not self.config.train.joint
            else None,
        }


def saved_config(run_dir: RunDir) -> dict[str, Any]:
    """The run's config.json with keys added to promptcl since then filled with their defaults
    (a run made by an older version resumes as long as it matches on the keys it knew)."""
    return to_dict(load_run_config(run_dir.path / "config.json"))


def prepare_run_dir(out: Path, config: RunConfig, resume: bool) -> RunDir:
    """Check the run directory before any work: nothing is written here."""
    run_dir = RunDir(out)
    if resume:
        if not run_dir.is_run():
            raise UsageError(f"{out} is not a promptcl run directory; check the --resume path")
    else:
        check_out(out, new_run_hint(out))
    return run_dir


def new_run_hint(out: Path) -> str:
    return f"pass --resume {out} to continue it or a new --out"


def run(
    config: RunConfig, out: str | Path, resume: bool = False, stop_after: int | None = None
) -> dict[str, Any] | None:
    """Run (or resume) an experiment into ``out``. Returns metrics.json's content, or None
    when ``stop_after`` tasks were done and the run was left to be resumed."""
    out = Path(out)
    run_dir = prepare_run_dir(out, config, resume)
    engine = Engine(config.train, log_root=out)
    engine.launch()
    exp = Experiment(config, engine)
    with ExitStack() as held:
        hint = None if resume else new_run_hint(run_dir.path)
        engine.on_main(lambda: held.enter_context(run_lock(run_dir.path, hint)))
        state: dict[str, Any] = {
            "tasks_done": 0,
            "acc_rows": [],
            "log": [],
            "train_seconds": 0.0,
            "eval_seconds": 0.0,
            "train_samples": 0,
            "task_id_acc": None,
            "union_acc": None,
        }
        saved = load_checkpoint(run_dir.checkpoint) if resume else None
        if resume:
            diffs = config_differences(saved_config(run_dir), exp.config_dict())
            if diffs:
                raise UsageError(
                    f"{out} was made with another config (differs in {', '.join(diffs)}); "
                    "resume without --config/--set, or start a new --out"
                )
        if saved is None:  # a new run, or one stopped before its first task boundary
            engine.on_main(lambda: run_dir.create(exp.config_dict(), exp.stream.describe()))
        fingerprint = run_dir.fingerprint(exp.stream.describe())
        if saved is not None:
            tensors, state = saved
            done = state["tasks_done"]
            changed = state.get("fingerprint", fingerprint) != fingerprint  # absent: older
            if changed or done > len(exp.training_tasks):
                raise UsageError(
                    f"{out}: config.json or the data changed after the checkpoint was written; "
                    "restore them, or start a new --out"
                )
            exp.restore(tensors, done)
            exp.steps = state.get("steps", 0)
            if engine.is_main:
                run_dir.write_log(state["log"])  # a run stopped before writing it
        state["fingerprint"] = fingerprint
        state["promptcl_version"] = __version__  # of the code that writes the checkpoint

        T = len(exp.training_tasks)
        for task in range(state["tasks_done"], T):
            if stop_after is not None and task >= stop_after:
                return None
            torch.manual_seed(task_seed(config.seed, task))
            start = time.perf_counter()
            exp.tuner.begin_task(task, exp.training_tasks[task])
            trained = exp.train_task(task)
            state["train_seconds"] += time.perf_counter() - start
            state["train_samples"] += trained["train_samples"]
            start = time.perf_counter()
            num_seen = exp.stream.num_tasks if config.train.joint else task + 1
            result = exp.evaluate(num_seen)
            state["eval_seconds"] += time.perf_counter() - start
            state["acc_rows"].append(result["acc"])
            state["union_acc"], state["task_id_acc"] = result["union_acc"], result["task_id_acc"]
            row = {"task": task, **trained, **result, "avg_acc": sum(result["acc"]) / num_seen}
            state["log"].append(row)
            state["tasks_done"], state["steps"] = task + 1, exp.steps
            if engine.is_main:
                save_checkpoint(run_dir.checkpoint, exp.tuner.trained_state(), state)
                run_dir.write_log(state["log"])
            report_task(engine, row, T, state["train_seconds"] + state["eval_seconds"], exp.steps)

        summary = summary_metrics(exp, state)
        if engine.is_main:
            run_dir.write_results(summary, exp.tuner.heatmaps())
        engine.finish_logging()
        engine.barrier()
        return summary


def report_task(engine: Engine, row: dict[str, Any], num_tasks: int, seconds: float, step: int):
    """A finished task: a line on the terminal and a row for the loggers."""
    task_id = row["task_id_acc"]
    engine.say(
        f"task {row['task'] + 1}/{num_tasks}: avg acc {row['avg_acc']:.2f}"
        + ("" if task_id is None else f", task-id acc {task_id:.1f}")
        + f", {seconds:.1f} s so far"
    )
    figures = {"avg_acc": row["avg_acc"], "union_acc": row["union_acc"]}
    if task_id is not None:
        figures["task_id_acc"] = task_id
    figures.update({f"acc_task{j + 1}": acc for j, acc in enumerate(row["acc"])})
    engine.log(figures, step)


def summary_metrics(exp: Experiment, state: dict[str, Any]) -> dict[str, Any]:
    config, T = exp.config, exp.stream.num_tasks
    rows = state["acc_rows"]
    if config.train.joint:  # one training task, evaluated on every task of the stream
        acc = rows[-1]
        figures = {
            "faa": sum(acc) / T,
            "caa": sum(acc) / T,
            "fm": None,
            "bwt": None,
            "avg_acc": [sum(acc) / T],
        }
        matrix = [acc]
    else:
        figures = metrics.summarize(rows)
        matrix = [row + [None] * (T - len(row)) for row in rows]
    return {
        "method": config.method,
        "benchmark": config.benchmark,
        "backbone": config.backbone,
        "seed": config.seed,
        "num_tasks": T,
        "joint": config.train.joint,
        "train_per_class": config.data.train_per_class,
        "test_per_class": config.data.test_per_class,
        "eval_split": config.data.eval_split,
        "acc_matrix": matrix,
        **figures,
        "union_acc": state["union_acc"],
        "task_id_acc": state["task_id_acc"],
        "trainable_params": exp.tuner.num_trained_parameters(),
        "train_seconds": state["train_seconds"],
        "eval_seconds": state["eval_seconds"],
        "train_samples_per_s": state["train_samples"] / state["train_seconds"]
        if state["train_samples"]
        else None,
        "leaks_task_identity": exp.tuner.leaks_task_identity,
        **exp.tuner.report(),
        **exp.engine.describe(),
        "promptcl_version": __version__,
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
    return load_config(path, [*old_defaults(read_yaml(Path(path))), *overrides])
