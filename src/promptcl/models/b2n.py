"""A base-to-novel run loaded for use: ``promptcl.load`` of a ``promptcl b2n`` directory.

config.json rebuilds the dual encoder and the method, the checkpoint holds the trained
tensors (none for zeroshot), class_split.json the base and novel class names and the template
class names are slotted into. ``predict`` scores the run's classes (base, then novel) or any
list of names, as the run's evaluation scores its classes (``PromptedDualEncoder.scorer``).
Runs written before class_split.json recorded the template: a text run used the intent
template unless data.template named one; an image run's is refused, saying how to add it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from promptcl.backbones import build_dual_encoder
from promptcl.config import migrate
from promptcl.core.checkpoint import load_checkpoint
from promptcl.core.loop import method_tensors
from promptcl.core.rundir import RunDir
from promptcl.data.batching import chunks_of, load_batches
from promptcl.data.labelled import INTENT_TEMPLATE
from promptcl.dual.prompted import PromptedDualEncoder
from promptcl.engine import Engine
from promptcl.errors import UsageError
from promptcl.models.base import Prediction, TrainedModel, inference_train_config, read_json_file
from promptcl.protocols.b2n import load_b2n_run_config, read_prompts


class DualModel(TrainedModel):
    """A ``promptcl b2n`` directory loaded for use (see the module docstring)."""

    def __init__(
        self, path: Path, model: PromptedDualEncoder, split: dict[str, Any], version: str | None
    ) -> None:
        self.path = path
        self.model = model
        self.base, self.novel = split["base"], split["novel"]
        self.class_names = [*self.base, *self.novel]
        self.tasks = None  # a dual encoder names no task
        self.version = version
        self.modality = model.encoder.modality

    @torch.no_grad()
    def predict(
        self,
        inputs: Sequence[Any],
        batch_size: int | None = None,
        class_names: Sequence[str] | None = None,
    ) -> list[Prediction]:
        """The class of each input among ``class_names`` (default: the run's base and novel
        classes), any names a class text can hold, trained on or not; score: the softmax
        of logit_scale * cosine over those names."""
        names = self.class_names if class_names is None else check_names(class_names)
        model = self.model
        size = model.config.train.eval_batch_size if batch_size is None else batch_size
        if size < 1:
            raise UsageError(f"batch size {size} must be >= 1")
        processor = model.processors["test"]
        items = processor.prepare(self.check_inputs(inputs))
        scores = model.scorer(model.class_texts(names))
        results = []
        chunks = chunks_of(range(len(items)), size)
        for _, _, batch in load_batches(items, [-1] * len(items), processor, chunks, model.device):
            logits = scores(batch).float()
            label = logits.argmax(dim=1)
            score = logits.softmax(dim=1).gather(1, label[:, None])[:, 0]
            results += [
                Prediction(names[c], p) for c, p in zip(label.tolist(), score.tolist(), strict=True)
            ]
        return results


def check_names(names: Sequence[str]) -> list[str]:
    """A list of distinct, non-empty class names; a one-line error otherwise."""
    if isinstance(names, str):
        raise UsageError("class_names takes a list of names; wrap a single one in [ ]")
    names = [name.strip() if isinstance(name, str) else name for name in names]
    if not names or not all(isinstance(name, str) and name for name in names):
        raise UsageError("class_names must be a non-empty list of non-empty names")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise UsageError(f"class name {repeated[0]!r} is given twice; name each class once")
    return names


def load_b2n_run(path: Path, device: str | torch.device | None = None) -> DualModel:
    """``promptcl.load`` of a ``promptcl b2n`` directory."""
    run_dir = RunDir(path)
    written = run_dir.read_config()
    config = load_b2n_run_config(run_dir.config)
    split = read_json_file(path / "class_split.json", "the base and novel classes")
    ok = isinstance(split, dict) and all(
        isinstance(split.get(k), list) and all(isinstance(n, str) for n in split[k])
        for k in ("base", "novel")
    )
    if not ok or not split["base"]:
        raise UsageError(f"{path / 'class_split.json'} is not a promptcl class split; restore it")
    metrics = read_json_file(path / "metrics.json", "written when a b2n run finishes")
    engine = Engine(inference_train_config(config.train, device))
    encoder = build_dual_encoder(config.backbone, config.logit_scale)
    default = INTENT_TEMPLATE if encoder.modality == "text" else None
    template = migrate.class_text_template(split, config.data.template, default)
    if template is None:
        raise UsageError(
            f'{path / "class_split.json"} predates the recorded template; add "template": '
            '"..." with the data set\'s class-text template (e.g. "a photo of a {}.")'
        )
    model = PromptedDualEncoder(config, engine, split["base"], template, encoder)
    if model.method.state_dict():
        model.load_prompts(trained_prompts(run_dir, split), str(path))
    return DualModel(path, model, split, migrate.run_version(written, metrics))


def trained_prompts(run_dir: RunDir, split: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The method's tensors of a finished b2n run: its verified checkpoint, which must match
    config.json and class_split.json (or a 0.1.0 run's prompts.safetensors)."""
    saved = load_checkpoint(run_dir.checkpoint, "restore the run directory from a copy")
    if saved is not None:
        tensors, state = saved
        if not run_dir.matches(state, split):
            raise UsageError(
                f"{run_dir.path}: config.json or class_split.json changed after the checkpoint "
                "was written; restore them from a copy of the run"
            )
        return method_tensors(tensors)
    legacy = migrate.legacy_prompts(run_dir.path)
    if legacy is None:
        raise UsageError(f"{run_dir.path} holds no trained prompts (no checkpoint/); restore it")
    return read_prompts(legacy)
