"""The base-to-novel protocol: prompts learned on a frozen dual encoder, tested on base classes,
on novel classes and across data sets. A client of the core (promptcl.core): a unit is an
epoch, so a run resumes from its last finished epoch.

Classes are ordered (intents: by a seeded shuffle; CoOp image sets: their label order) and
split in two halves, base and novel. Training sees ``shots`` samples per base class and
minimises the cross-entropy of logit_scale * cos(f(x), g(t_c)) over the base classes, plus the
method's own terms (``DualMethod.loss_terms``: KgCoOp, PromptSRC). Base
accuracy is measured over the base classes on base test samples, novel accuracy over the novel
classes on novel test samples, HM = 2bn / (b + n). Targets in ``transfer`` are evaluated over
all their classes with the learned prompts (cross-dataset transfer).

The b2n defaults are MaPLe's and MPL's recipe (SGD with momentum, Dassl's constant warmup then
cosine). The run directory is the core's: config.json, class_split.json (base and novel class
names, the class-text template), log.jsonl (a line per epoch), metrics.json, b2n.png (bars of
base, novel and HM) and checkpoint/ (the method's tensors, and the optimiser's while training);
``promptcl.load`` reads it back.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from promptcl.backbones import widened
from promptcl.config import B2NConfig, load_structured, migrate
from promptcl.core import run as core
from promptcl.core.checkpoint import RunState, load_checkpoint, read_checkpoint, read_tensors
from promptcl.core.loop import (
    Loop,
    Stage,
    Training,
    mean_terms,
    method_tensors,
    optimizer_tensors,
)
from promptcl.core.rundir import RunDir
from promptcl.data import load_labelled
from promptcl.data.batching import chunks_of, load_batches
from promptcl.data.labelled import LabelledData, Sample, base_novel, cap_per_class, few_shot
from promptcl.dual.context import ClassTexts
from promptcl.dual.methods import get_method
from promptcl.dual.methods.base import TrainStep
from promptcl.dual.prompted import PromptedDualEncoder
from promptcl.engine import Engine
from promptcl.errors import UsageError
from promptcl.metrics import harmonic_mean
from promptcl.report.plots import plot_bars


def relabel(samples: Sequence[Sample], classes: Sequence[int]) -> list[Sample]:
    """Keep the samples of ``classes``, labelled by their position in ``classes``."""
    position = {c: i for i, c in enumerate(classes)}
    return [(item, position[y]) for item, y in samples if y in position]


class B2NExperiment(core.Protocol):
    """Everything a base-to-novel run needs, built and checked before anything is written to
    disk. ``prompts`` (a run directory or a safetensors file) replaces training."""

    kind = "base-to-novel"
    command = "b2n"
    classes_file = "class_split.json"
    unit = "epoch"

    def __init__(
        self, config: B2NConfig, engine: Engine | None = None, prompts: str | Path | None = None
    ) -> None:
        self.config = config
        self.engine = engine or Engine(config.train)
        self.device = self.engine.device
        data = self.load(config.benchmark)
        order = data.class_order(config.seed)
        self.base, self.novel = (order, []) if config.data.all_classes else base_novel(order)
        self.names = {
            "base": self.names_of(data, self.base),
            "novel": self.names_of(data, self.novel),
        }
        self.template = data.template
        self.model = PromptedDualEncoder(config, self.engine, self.names["base"], data.template)
        self.encoder, self.method = self.model.encoder, self.model.method
        self.processors = self.model.processors
        self.check_modality(data)
        self.train = relabel(few_shot(data.train, self.base, config.shots, config.seed), self.base)
        test = cap_per_class(data.test, config.data.test_per_class)
        self.tests = {"base": relabel(test, self.base), "novel": relabel(test, self.novel)}
        self.texts = {k: self.model.class_texts(v) for k, v in self.names.items() if v}
        self.targets = {}
        for name in config.transfer:
            target = self.load(name)
            self.check_modality(target)
            samples = cap_per_class(target.test, config.data.test_per_class)
            texts = self.model.class_texts(target.classnames, target.template)
            self.targets[name] = (samples, texts)
        self.prompts = None if prompts is None else Path(prompts)
        if self.prompts is not None:
            self.model.load_prompts(read_prompts(self.prompts), str(self.prompts))
        self.loop = Loop(self.engine, config.train, config.seed)
        self.training: Training | None = None

    def load(self, name: str) -> LabelledData:
        cfg = self.config.data
        return load_labelled(name, cfg.root, cfg.eval_split, cfg.template)

    def check_modality(self, data: LabelledData) -> None:
        if data.modality != self.encoder.modality:
            raise UsageError(
                f"backbone {self.config.backbone} encodes {self.encoder.modality} queries but "
                f"{data.name} is {data.modality} data; pick a matching backbone"
            )

    @staticmethod
    def names_of(data: LabelledData, classes: Sequence[int]) -> list[str]:
        return [data.classnames[c] for c in classes]

    # -- the protocol's part of a run ----------------------------------------------------------

    def classes(self) -> dict[str, Any]:
        return {
            "base": self.names["base"],
            "novel": self.names["novel"],
            "template": self.template,  # what class names are slotted into (predict reads it)
            "train_samples": len(self.train),
        }

    def trains(self) -> bool:
        return self.prompts is None and any(p.requires_grad for p in self.method.parameters())

    def num_units(self) -> int:
        return self.config.train.epochs if self.trains() else 0

    def setup_training(self) -> Training:
        """The loss of base-class batches and the optimiser, built once for all epochs."""
        if self.training is None:
            self.method.begin_training(self.encoder, self.names["base"], self.template)
            params = [p for p in self.method.parameters() if p.requires_grad]
            self.training = self.loop.setup(self.method, self.loss_terms(), [{"params": params}])
        return self.training

    def run_unit(self, epoch: int, state: RunState) -> dict[str, Any]:
        """One epoch over the base shots."""
        training = self.setup_training()
        stage = Stage(0, range(len(self.train)), lambda chunks: self.batches("train", chunks))
        self.method.train()
        done = self.loop.train(stage, range(epoch, epoch + 1), training)
        self.method.end_epoch(epoch, self.config.train.epochs)
        self.method.eval()
        state.train_seconds += done.seconds
        state.samples_seen += len(self.train)
        state.steps = self.loop.steps
        losses = mean_terms(done.steps)
        return {"epoch": epoch, "lr": done.lr, "losses": losses, "seconds": done.seconds}

    def report(self, row: dict[str, Any], state: RunState) -> None:
        loss, epochs = row["losses"]["ce"], self.config.train.epochs
        self.engine.say(
            f"epoch {row['epoch'] + 1}/{epochs}: loss {loss:.4f}, {row['seconds']:.1f} s"
        )
        self.engine.log({"epoch_loss": loss}, state.steps)

    def trained_state(self) -> dict[str, torch.Tensor]:
        """The method's tensors, and while it trains the optimiser's state (a resumed epoch
        then continues the momentum of the unbroken run)."""
        tensors = dict(self.method.state_dict())
        if self.training is not None:
            tensors.update(optimizer_tensors(self.training.optimizer))
        return tensors

    def restore(self, tensors: dict[str, torch.Tensor], state: RunState) -> None:
        """The prompts, and the optimiser (set up here: the loop gives it the saved state)."""
        self.model.load_prompts(tensors, "the checkpoint")
        self.setup_training()
        self.loop.steps = state.steps

    def valid_log(self, log: list[dict[str, Any]]) -> bool:
        """Rows whose losses are numbers, the cross-entropy among them."""
        return all(
            isinstance(row.get("losses"), dict)
            and "ce" in row["losses"]
            and all(type(v) in (int, float) for v in row["losses"].values())
            for row in log
        )

    def finish(self, state: RunState) -> dict[str, Any]:
        """Base, novel and transfer accuracy with the trained (or given) prompts."""
        config = self.config
        start = time.perf_counter()
        base = self.accuracy(self.tests["base"], self.texts["base"], "evaluate base")
        novel = (
            self.accuracy(self.tests["novel"], self.texts["novel"], "evaluate novel")
            if "novel" in self.texts
            else None
        )
        transfer = {
            name: self.accuracy(samples, texts, f"evaluate {name}")
            for name, (samples, texts) in self.targets.items()
        }
        return {
            **self.run_fields(),
            "shots": config.shots,
            "eval_split": config.data.eval_split,
            "num_base": len(self.base),
            "num_novel": len(self.novel),
            "base_acc": base,
            "novel_acc": novel,
            "hm": None if base is None or novel is None else harmonic_mean(base, novel),
            "transfer": transfer,
            "logit_scale": self.encoder.logit_scale,
            "trainable_params": self.method.num_trained_parameters(),
            "train_seconds": state.train_seconds,
            "eval_seconds": time.perf_counter() - start,
            "final_loss": state.log[-1]["losses"]["ce"] if state.log else None,
            **self.engine.describe(),
            "prompts_from": None if self.prompts is None else str(self.prompts),
            "promptcl_version": state.promptcl_version,
        }

    def plot(self, folder: Path, metrics: dict[str, Any]) -> None:
        config = self.config
        title = f"{config.method} on {config.benchmark} (seed {config.seed})"
        bars = {"base": metrics["base_acc"], "novel": metrics["novel_acc"], "HM": metrics["hm"]}
        plot_bars({**bars, **metrics["transfer"]}, folder / "b2n.png", title)

    @classmethod
    def saved_config(cls, run_dir: RunDir, overrides: Sequence[str] = ()) -> B2NConfig:
        return load_b2n_run_config(run_dir.config, overrides)

    # -- batches, loss and accuracy ------------------------------------------------------------

    def batches(
        self, split: str, chunks: Sequence[Sequence[int]], samples: Sequence[Sample] | None = None
    ) -> Iterator[tuple[torch.Tensor, dict[str, torch.Tensor]]]:
        """(labels, inputs) of each chunk of positions in ``samples`` (default: the base
        shots)."""
        samples = self.train if samples is None else samples
        processor = self.processors[split]
        items = processor.prepare([item for item, _ in samples])
        labels = [y for _, y in samples]
        workers = self.config.data.workers
        for _, y, inputs in load_batches(items, labels, processor, chunks, self.device, workers):
            yield y, inputs

    def loss_terms(self):
        """Cross-entropy of the scores over the base classes and the method's own terms
        (``DualMethod.loss_terms``), each weighted by the rank's share."""
        method, encoder = self.method, self.encoder
        texts = self.texts["base"].inputs(self.device)

        def terms_of(item: tuple[tuple[torch.Tensor, dict[str, torch.Tensor]], float]):
            (labels, inputs), share = item
            classify = method.classifier(encoder, texts)
            queries = encoder.encode_queries(inputs, method.query_prompts())  # (B, D)
            classes = classify(queries)  # (C, D), or (B, C, D) conditioned on the queries
            logits = widened(encoder.scores(queries, classes))
            extra = method.loss_terms(TrainStep(encoder, inputs, queries, classes, logits))
            terms = {"ce": F.cross_entropy(logits, labels), **extra}
            return {name: value * share for name, value in terms.items()}

        return terms_of

    @torch.no_grad()
    def accuracy(self, samples: Sequence[Sample], texts: ClassTexts, desc: str) -> float | None:
        """Accuracy (%) of samples over the classes of ``texts``; None without samples."""
        if not samples:
            return None
        scores = self.model.scorer(texts)

        def correct(batch: tuple[torch.Tensor, dict[str, torch.Tensor]]) -> torch.Tensor:
            labels, inputs = batch
            return (scores(inputs).argmax(1) == labels).sum()

        chunks = chunks_of(range(len(samples)), self.config.train.eval_batch_size)
        batches = lambda chunks: self.batches("test", chunks, samples)  # noqa: E731
        zero = torch.zeros((), dtype=torch.long)
        return (
            100.0 * self.loop.evaluate(chunks, batches, correct, zero, desc).item() / len(samples)
        )


def read_prompts(path: Path) -> dict[str, torch.Tensor]:
    """Trained prompts to evaluate (``promptcl b2n --prompts``): a b2n run directory (its
    verified checkpoint; a 0.1.0 run's prompts.safetensors), a checkpoint file, or a
    safetensors file of the method's tensors."""
    hint = "pass a b2n run directory or a safetensors file of its prompts"
    if path.is_dir():
        saved = load_checkpoint(path / "checkpoint", hint)
        if saved is not None:
            return method_tensors(saved[0])
        legacy = migrate.legacy_prompts(path)
        if legacy is None:
            raise UsageError(f"{path} holds no trained prompts; {hint}")
        path = legacy
    if not path.is_file():
        raise UsageError(f"{path} not found; {hint}")
    broken = UsageError(f"{path} is not a safetensors file (damaged, or another format); {hint}")
    tensors, metadata = read_tensors(path, broken)
    if "sha256" in metadata:  # a checkpoint file: verified as in its run directory
        tensors = read_checkpoint(path, hint)[0]
    return method_tensors(tensors)


def run_b2n(
    config: B2NConfig,
    out: str | Path,
    prompts: str | Path | None = None,
    resume: bool = False,
    stop_after: int | None = None,
) -> dict[str, Any] | None:
    """Train on the base classes (or evaluate trained ``prompts``), evaluate base, novel and
    transfer targets; returns (and writes) metrics.json's content, or None when ``stop_after``
    epochs were done and the run was left to be resumed."""
    return core.run(B2NExperiment, config, out, resume, stop_after, prompts=prompts)


def method_options(method: str) -> type:
    """The options dataclass of a dual-encoder method."""
    return get_method(method).config_class


def load_b2n_config(
    path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()
) -> B2NConfig:
    """Defaults, then the YAML file at ``path``, then ``key=value`` overrides, type checked."""
    return load_structured(B2NConfig, path, overrides, "b2n", method_options)


def load_b2n_run_config(path: str | Path, overrides: Sequence[str] = ()) -> B2NConfig:
    """A b2n run directory's config.json, then ``overrides``."""
    return load_structured(B2NConfig, path, overrides, "b2n", method_options, run_dir=True)
