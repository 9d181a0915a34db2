"""Base-to-novel and cross-dataset evaluation of prompts learned on a frozen dual encoder.

Classes are ordered (intents: by a seeded shuffle; CoOp image sets: their label order) and
split in two halves, base and novel. Training sees ``shots`` samples per base class and
minimises the cross-entropy of logit_scale * cos(f(x), g(t_c)) over the base classes. Base
accuracy is measured over the base classes on base test samples, novel accuracy over the novel
classes on novel test samples, HM = 2bn / (b + n). Targets in ``transfer`` are evaluated over
all their classes with the learned prompts (cross-dataset transfer).

Training uses the shared optimiser, schedule and step (promptcl.runtime); the b2n defaults are
MaPLe's and MPL's recipe (SGD with momentum, Dassl's constant warmup then cosine).

Run directory: config.json, class_split.json (base and novel class names, the class-text
template), log.jsonl (a line per epoch), metrics.json, b2n.png (bars of base, novel and HM) and
prompts.safetensors (the trained tensors only); ``promptcl.load`` reads them back.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from tqdm.auto import tqdm

from promptcl.config import B2NConfig, load_structured, to_dict
from promptcl.data.batching import collated, cut
from promptcl.dual.context import ClassTexts
from promptcl.dual.data import (
    LabelledData,
    Sample,
    base_novel,
    cap_per_class,
    few_shot,
    load_b2n_data,
)
from promptcl.dual.methods import get_method
from promptcl.dual.prompted import PromptedDualEncoder
from promptcl.engine import Engine
from promptcl.errors import UsageError
from promptcl.files import check_out, dumps, run_lock, write_json
from promptcl.metrics import harmonic_mean
from promptcl.report.plots import plot_bars
from promptcl.runtime import (
    epoch_order,
    make_optimizer,
    optimisation_steps,
    set_epoch_lr,
)
from promptcl.version import __version__


def relabel(samples: Sequence[Sample], classes: Sequence[int]) -> list[Sample]:
    """Keep the samples of ``classes``, labelled by their position in ``classes``."""
    position = {c: i for i, c in enumerate(classes)}
    return [(item, position[y]) for item, y in samples if y in position]


class B2NExperiment:
    """Everything a run needs, built and checked before anything is written to disk."""

    def __init__(self, config: B2NConfig, engine: Engine | None = None) -> None:
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

    def load(self, name: str) -> LabelledData:
        cfg = self.config.data
        return load_b2n_data(name, cfg.root, cfg.eval_split, cfg.template)

    def check_modality(self, data: LabelledData) -> None:
        if data.modality != self.encoder.modality:
            raise UsageError(
                f"backbone {self.config.backbone} encodes {self.encoder.modality} queries but "
                f"{data.name} is {data.modality} data; pick a matching backbone"
            )

    @staticmethod
    def names_of(data: LabelledData, classes: Sequence[int]) -> list[str]:
        return [data.classnames[c] for c in classes]

    # -- batches -------------------------------------------------------------------------------

    def batches(
        self, split: str, samples: Sequence[Sample], chunks: Sequence[Sequence[int]]
    ) -> Iterator[tuple[torch.Tensor, dict[str, torch.Tensor]]]:
        """(labels, inputs) of each chunk of positions in ``samples``."""
        processor = self.processors[split]
        items = processor.prepare([item for item, _ in samples])
        labels = [y for _, y in samples]
        workers = self.config.data.workers
        for _, y, inputs in collated(items, labels, processor, chunks, self.device, workers):
            yield y, inputs

    def bar(self, iterable, total: int, desc: str):
        progress = self.config.train.progress
        return tqdm(
            iterable, total=total, desc=desc, disable=None if progress else True, leave=False
        )

    # -- training and evaluation ---------------------------------------------------------------

    def fit(self, log_path: Path | None = None) -> list[dict[str, Any]]:
        """Train on the base shots; returns one log row per epoch (appended to ``log_path``
        as each epoch ends)."""
        cfg, method, encoder = self.config.train, self.method, self.encoder
        params = [p for p in method.parameters() if p.requires_grad]
        if not params or cfg.epochs == 0:
            return []
        texts = self.texts["base"].inputs(self.device)

        def loss_terms(item: tuple[tuple[torch.Tensor, dict[str, torch.Tensor]], float]):
            (labels, inputs), share = item
            classes = encoder.encode_labels(texts, method.label_prompts())  # (C, D)
            queries = encoder.encode_queries(inputs, method.query_prompts())  # (B, D)
            logits = encoder.scores(queries, classes).float()
            return {"ce": F.cross_entropy(logits, labels) * share}

        engine = self.engine
        optimizer = make_optimizer(cfg, [{"params": params}])
        step, optimizer = engine.setup(method, loss_terms, optimizer)
        method.train()
        log = []
        for epoch in range(cfg.epochs):
            lr = set_epoch_lr(optimizer, cfg, epoch)
            start = time.perf_counter()
            order = epoch_order(len(self.train), self.config.seed, 0, epoch)
            samples = [self.train[i] for i in order]
            shares = engine.global_batches(cut(range(len(samples)), cfg.batch_size))
            batches = self.batches("train", samples, [chunk for chunk, _ in shares])
            items = ((b, len(chunk) / n) for b, (chunk, n) in zip(batches, shares, strict=True))
            steps = optimisation_steps(
                items,
                step,
                optimizer,
                engine=engine,
                grad_clip=cfg.grad_clip,
                where=f"epoch {epoch + 1}/{cfg.epochs}",
                progress=cfg.progress,
                total=len(shares),
            )
            losses = [terms["ce"] for terms in steps]
            seconds = time.perf_counter() - start
            row = {"epoch": epoch, "lr": lr, "loss": sum(losses) / len(losses), "seconds": seconds}
            log.append(row)
            engine.log({"epoch": epoch, "lr": lr, "loss": row["loss"]}, epoch)
            engine.say(f"epoch {epoch + 1}/{cfg.epochs}: loss {row['loss']:.4f}, {seconds:.1f} s")
            if log_path is not None and engine.is_main:
                with log_path.open("a", encoding="utf-8") as f:
                    f.write(dumps(row) + "\n")
        method.eval()
        return log

    @torch.no_grad()
    def accuracy(self, samples: Sequence[Sample], texts: ClassTexts, desc: str) -> float | None:
        """Accuracy (%) of samples over the classes of ``texts``; None without samples."""
        if not samples:
            return None
        engine = self.engine
        scores = self.model.scorer(texts)
        # whole batches round-robin to the ranks, correct counts summed
        chunks = engine.shard(cut(range(len(samples)), self.config.train.eval_batch_size))
        correct = torch.zeros((), dtype=torch.long, device=self.device)
        for labels, inputs in self.bar(self.batches("test", samples, chunks), len(chunks), desc):
            correct += (scores(inputs).argmax(1) == labels).sum()
        return 100.0 * engine.sum(correct).item() / len(samples)


NEW_OUT = "pass a new --out"


def run_b2n(
    config: B2NConfig, out: str | Path, prompts: str | Path | None = None
) -> dict[str, Any]:
    """Train on the base classes (or load trained ``prompts``), evaluate base, novel and
    transfer targets; returns (and writes) metrics.json's content."""
    out = Path(out)
    check_out(out, NEW_OUT)
    engine = Engine(config.train, log_root=out)
    engine.launch()
    exp = B2NExperiment(config, engine)
    if prompts is not None:
        exp.model.load_prompts(Path(prompts))
    with ExitStack() as held:
        engine.on_main(lambda: held.enter_context(run_lock(out, NEW_OUT)))
        split = {
            "base": exp.names["base"],
            "novel": exp.names["novel"],
            "template": exp.template,  # what class names are slotted into (predict reads it)
            "train_samples": len(exp.train),
        }
        if engine.is_main:
            write_json(out / "config.json", to_dict(config))
            write_json(out / "class_split.json", split)
            (out / "log.jsonl").write_text("", encoding="utf-8")

        start = time.perf_counter()
        log = exp.fit(out / "log.jsonl") if prompts is None else []
        train_seconds = time.perf_counter() - start

        start = time.perf_counter()
        base = exp.accuracy(exp.tests["base"], exp.texts["base"], "evaluate base")
        novel = (
            exp.accuracy(exp.tests["novel"], exp.texts["novel"], "evaluate novel")
            if "novel" in exp.texts
            else None
        )
        transfer = {
            name: exp.accuracy(samples, texts, f"evaluate {name}")
            for name, (samples, texts) in exp.targets.items()
        }
        metrics = {
            "method": config.method,
            "benchmark": config.benchmark,
            "backbone": config.backbone,
            "seed": config.seed,
            "shots": config.shots,
            "eval_split": config.data.eval_split,
            "num_base": len(exp.base),
            "num_novel": len(exp.novel),
            "base_acc": base,
            "novel_acc": novel,
            "hm": None if base is None or novel is None else harmonic_mean(base, novel),
            "transfer": transfer,
            "logit_scale": exp.encoder.logit_scale,
            "trainable_params": exp.method.num_trained_parameters(),
            "train_seconds": train_seconds,
            "eval_seconds": time.perf_counter() - start,
            "final_loss": log[-1]["loss"] if log else None,
            **engine.describe(),
            "prompts_from": None if prompts is None else str(prompts),
            "promptcl_version": __version__,
        }
        if engine.is_main:
            trained = {k: v.detach().cpu().contiguous() for k, v in exp.method.state_dict().items()}
            if trained:
                save_file(trained, out / "prompts.safetensors")
            write_json(out / "metrics.json", metrics)
            title = f"{config.method} on {config.benchmark} (seed {config.seed})"
            bars = {"base": base, "novel": novel, "HM": metrics["hm"], **transfer}
            plot_bars(bars, out / "b2n.png", title)
        engine.finish_logging()
        engine.barrier()
        return metrics


def method_options(method: str) -> type:
    """The options dataclass of a dual-encoder method."""
    return get_method(method)[0]


def load_b2n_config(
    path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()
) -> B2NConfig:
    """Defaults, then the YAML file at ``path``, then ``key=value`` overrides, type checked."""
    return load_structured(B2NConfig, path, overrides, "b2n", method_options)
