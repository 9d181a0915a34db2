"""Per-task edits of frozen linear layers on top of a prompt method: the shared machinery of
Soft-TransFormers (``softtf``) and the baselines it is compared with (``wsn``, ``lora``,
``adapter``; Kang et al., section 4 and tables 1-2).

A method here is a prompt method (``base``: DualPrompt by default, or L2P; a registered method
implementing ``EditBase``) run unchanged as ``self.base``, plus, in each block of ``blocks``
(default: the last 3), one edit per task of each edited frozen linear layer
(backbones/masked.py), passed to the base's forward as ``edits``. The subclass says what an
edit is (``make_edit``) and which layers it edits (``layer_names``). Training uses the true
task's edits and E-prompt; only the current task's edits train, older ones are frozen, and
edits exist for seen tasks only.

Task identity at evaluation (``task_id``):

- ``prompt`` ("Prompt ID"): per-sample key matching; the base's task keys (DualPrompt's), or,
  for a base without (L2P), one key per task kept here and pulled to its task's queries
  (weight ``key_pull_coeff``).
- ``gradient`` (per-sample Gradient ID, taskid/gradient.py): every seen task's edits and
  E-prompt are superposed with weights alpha_b (1/T each) per sample; the layers compute
  sum_i alpha_{b,i} edit_i(x_b) and the E-prompt is sum_i alpha_{b,i} e_i (the public code
  instead takes the E-prompt of key matching in this pass; superposing it too keeps Gradient ID
  free of the keys). task_b = argmax_i(-dH_b/dalpha_{b,i}) with H_b the entropy over the seen
  classes (``entropy_top``: ``top``, over their top C/T logits; ``reference``, gradient-batch
  only, Soft-TF's code: the top C/T of all classes, first 7 samples; taskid/gradient.py); the
  prediction then runs with task_b's edits and E-prompt.
- ``tii``: the task of the class that a classifier on the frozen query predicts (``tii``
  options: ``classifier`` lda, ncm or mlp; taskid/tii.py), fitted after every task whatever
  ``task_id`` says, so that trained tensors can be evaluated under each inference.
- ``gradient-batch``: the paper's one-shot form, one alpha shared by the batch, hence one task
  per batch. It leaks the task identity (a task-pure batch names its task): the loop evaluates
  it on task-pure batches and marks the run ``leaks_task_identity``.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, Protocol, runtime_checkable

import torch
from torch import nn

from promptcl.backbones.base import Trunk
from promptcl.backbones.masked import OutputEdit, WeightEdit
from promptcl.config import build_dataclass, to_dict
from promptcl.taskid import TaskKeys, gradient_id
from promptcl.taskid.gradient import entropy_logits, entropy_set_name
from promptcl.taskid.tii import TaskInference, TIIOptions
from promptcl.tuners import TUNERS, get_tuner
from promptcl.tuners.base import Batch, TaskData, Tuner, TunerOutput
from promptcl.tuners.editbank import TaskEditBank, edited_layers
from promptcl.tuners.prompts import check_blocks

TASK_ID_MODES = ("prompt", "gradient", "tii", "gradient-batch")


@runtime_checkable
class EditBase(Protocol):
    """What per-task edits need from the prompt method under them, besides the Tuner interface
    (its begin_task and loss_terms run as they are; its forward takes (B,) task ids or (B, T)
    weights superposing the seen tasks' prompts, and the keywords ``edits`` and ``trunk``, which
    it passes on to ``Backbone.forward``). DualPrompt and L2P implement it."""

    def task_blocks(self) -> list[int]:
        """The blocks whose computation depends on the task ([] if none does)."""
        ...

    def own_task_keys(self) -> TaskKeys | None:
        """Its own per-task keys (its begin_task adds them, its loss_terms pulls them); None if
        it has none."""
        ...

    def new_task_keys(self) -> TaskKeys:
        """Empty per-task keys, started as its own prompts are, for the edit method to keep
        when ``own_task_keys`` is None."""
        ...


def edit_bases() -> list[str]:
    """The registered methods that can serve as ``base``."""
    return [name for name, cls in TUNERS.items() if issubclass(cls, EditBase)]


@dataclass
class EditOptions:
    """Options shared by every method of this family; each method's config adds its own."""

    base: str = field(
        default="dualprompt",
        metadata={"help": "Prompt method under the edits, by name: dualprompt or l2p."},
    )
    base_options: dict[str, Any] = field(
        default_factory=dict,
        metadata={"help": "The base method's options (e.g. g_blocks of dualprompt)."},
    )
    blocks: list[int] | None = field(
        default=None, metadata={"help": "Blocks whose linears are edited; null: the last 3."}
    )
    mlp: bool = field(
        default=False, metadata={"help": "Also edit the MLP's fc1 and fc2 (else attention only)."}
    )
    task_id: str = field(
        default="prompt",
        metadata={
            "help": "Task inference: prompt (key matching), gradient (per-sample Gradient ID), "
            "tii (a classifier on the frozen query, tuner.tii.*), gradient-batch (one task per "
            "batch: leaks task identity, flagged)."
        },
    )
    entropy_top: str = field(
        default="seen",
        metadata={
            "help": "Gradient ID's entropy: seen (all seen classes), top (their top C/T logits), "
            "reference (gradient-batch only; Soft-TF's code: top C/T of all classes, 7 samples)."
        },
    )
    tii: TIIOptions = field(
        default_factory=TIIOptions,
        metadata={"help": "task_id=tii: the classifier on the frozen query and its training."},
    )
    key_pull_coeff: float = field(
        default=1.0,
        metadata={
            "help": "Base without task keys (l2p): weight of the loss pulling the task key to "
            "its queries."
        },
    )

    def __post_init__(self) -> None:
        if self.base not in TUNERS or not issubclass(TUNERS[self.base], EditBase):
            raise ValueError(f"base must be one of {', '.join(edit_bases())}, not {self.base}")
        if self.task_id not in TASK_ID_MODES:
            raise ValueError(f"task_id must be one of {', '.join(TASK_ID_MODES)}")
        if self.key_pull_coeff < 0:
            raise ValueError("key_pull_coeff must be >= 0")
        if self.tii.adapt:
            raise ValueError(
                "tii.adapt is an option of hide, norga and hash; here tii reads the frozen query"
            )
        self.entropy_top = entropy_set_name(self.entropy_top)
        if self.entropy_top == "reference" and self.task_id != "gradient-batch":
            raise ValueError(
                "entropy_top=reference needs task_id=gradient-batch (Soft-TF's one-shot form)"
            )
        self.base_options = to_dict(self.base_config())  # every key, for config.json

    def base_config(self) -> Any:
        """The base method's config, from ``base_options``."""
        cls = get_tuner(self.base).config_class
        return build_dataclass(cls, self.base_options, "tuner.base_options")


class EditTuner(Tuner):
    """Base class of softtf, wsn, lora and adapter: subclasses implement ``make_edit``."""

    needs_query = True
    # the edited layers' short names (Backbone.linear_paths); None: attention (+ MLP, ``mlp``)
    layer_names: ClassVar[Collection[str] | None] = None

    def __init__(self, config: EditOptions, backbone, num_classes: int) -> None:
        super().__init__(config, backbone, num_classes)
        self.base: EditBase = get_tuner(config.base)(config.base_config(), backbone, num_classes)
        n = backbone.num_blocks
        blocks = config.blocks if config.blocks is not None else list(range(max(0, n - 3), n))
        self.edit_blocks = check_blocks(blocks, backbone, "blocks")
        mlp = config.mlp or self.layer_names is not None
        self.edits = TaskEditBank(edited_layers(backbone, self.edit_blocks, mlp, self.layer_names))
        # a base without task keys of its own (L2P) gets them here, trained with the edits
        self.task_keys = self.base.new_task_keys() if self.base.own_task_keys() is None else None
        self.register_buffer("class_task", torch.full((num_classes,), -1, dtype=torch.long))
        self.params_per_task = 0
        self.tii = TaskInference(backbone.dim, num_classes, config.tii)

    def make_edit(self, layer: nn.Linear) -> WeightEdit | OutputEdit:
        """The new task's edit of one frozen layer."""
        raise NotImplementedError

    def begin_task(self, task: int, classes: Sequence[int]) -> None:
        before = self.num_trained_parameters()
        self.base.begin_task(task, classes)
        self.edits.add_task(self.make_edit)
        self.class_task[list(classes)] = task
        self.tii.begin_task(task, classes)
        if self.task_keys is not None:
            self.task_keys.add_task(self.class_task.device)
        self.params_per_task = self.num_trained_parameters() - before

    def forward(self, batch: Batch, task: torch.Tensor | None = None) -> TunerOutput:
        if task is not None:
            return self.base(batch, task, edits=self.edits.choice(task))
        # Gradient ID's superposed pass and the final pass share the blocks below the first
        # task-dependent one
        shared = self.config.task_id not in ("prompt", "tii")
        trunk = Trunk(self.trunk_depth) if shared else None
        task = self.infer_task(batch, trunk)
        out = self.base(batch, task, edits=self.edits.choice(task), trunk=trunk)
        return replace(out, task_pred=task)

    @property
    def trunk_depth(self) -> int:
        """The first block whose computation depends on the task (edits, E-prompts)."""
        blocks = [*self.edit_blocks, *self.base.task_blocks()]
        return min(blocks, default=self.backbone.num_blocks - 1)

    def infer_task(self, batch: Batch, trunk: Trunk | None = None) -> torch.Tensor:
        """(B,) task per sample (one task for the whole batch in gradient-batch mode); ``trunk``:
        the hidden states the superposed pass shares with the final one."""
        if self.config.task_id == "prompt":
            keys = self.base.own_task_keys() if self.task_keys is None else self.task_keys
            return keys.match(batch.query)
        if self.config.task_id == "tii":
            return self.tii.infer_task(batch.query)
        seen = (self.class_task >= 0).nonzero().squeeze(1)
        num_tasks = self.edits.num_tasks
        seen, top = entropy_logits(self.config.entropy_top, seen, self.num_classes, num_tasks)

        def logits_of(alpha: torch.Tensor) -> torch.Tensor:
            edits = self.edits.choice(alpha)
            return self.base(batch, alpha, edits=edits, trunk=trunk).logits[:, seen]

        shared = self.config.task_id == "gradient-batch"
        size, device = batch.labels.shape[0], self.class_task.device
        return gradient_id(logits_of, size, num_tasks, top=top, shared=shared, device=device)

    @torch.no_grad()
    def end_task(self, task: int, classes: Sequence[int], data: TaskData) -> None:
        """The base's end of task, then the TII classifier on the task's frozen queries."""
        self.base.end_task(task, classes, data)
        self.tii.fit(task, classes, data.cat("query"), data.cat("labels"))

    def loss_terms(self, batch: Batch, out: TunerOutput, task: int) -> dict[str, torch.Tensor]:
        terms = self.base.loss_terms(batch, out, task)
        if self.task_keys is not None:
            pull = self.task_keys.pull(batch.query, task)
            terms["task_pull"] = self.config.key_pull_coeff * pull
        return terms

    @property
    def leaks_task_identity(self) -> bool:
        return self.config.task_id == "gradient-batch"

    def report(self) -> dict[str, Any]:
        return {
            **self.base.report(),
            "params_per_task": self.params_per_task,
            "edit_params_per_task": self.edits.params_per_task(),
            "edit_blocks": self.edit_blocks,
            "task_id": self.config.task_id,
        }
