"""Per-task edits of frozen linear layers on top of a prompt method: the shared machinery of
Soft-TransFormers (``softtf``) and the baselines it is compared with (``wsn``, ``lora``,
``adapter``; Kang et al., section 4 and tables 1-2).

A method here is a prompt method (DualPrompt by default, or L2P) run unchanged as ``self.base``,
plus, in each block of ``blocks`` (default: the last 3), one edit per task of each wrapped
frozen linear layer (backbones/masked.py). The subclass says what an edit is
(``make_edit``) and which layers it wraps (``layer_names``). Training uses the true task's
edits and E-prompt; only the current task's edits train, older ones are frozen, and edits exist
for seen tasks only.

Task identity at evaluation (``task_id``):

- ``prompt`` ("Prompt ID"): per-sample key matching; DualPrompt's task keys, or on L2P one key
  per task added here and pulled to its task's queries (weight ``key_pull_coeff``).
- ``gradient`` (per-sample Gradient ID, taskid/gradient.py): every seen task's edits and
  E-prompt are superposed with weights alpha_b (1/T each) per sample; the layers compute
  sum_i alpha_{b,i} edit_i(x_b) and the E-prompt is sum_i alpha_{b,i} e_i (the public code
  instead takes the E-prompt of key matching in this pass; superposing it too keeps Gradient ID
  free of the keys). task_b = argmax_i(-dH_b/dalpha_{b,i}) with H_b the entropy over the seen
  classes (``entropy_top``: ``top``, over their top C/T logits; ``reference``, gradient-batch
  only, Soft-TF's code: the top C/T of all classes, first 7 samples; taskid/gradient.py); the
  prediction then runs with task_b's edits and E-prompt.
- ``gradient-batch``: the paper's one-shot form, one alpha shared by the batch, hence one task
  per batch. It leaks the task identity: the loop evaluates it on task-pure
  batches and marks the run ``leaks_task_identity``.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

import torch
from torch import nn

from promptcl.backbones.masked import OutputEdit, WeightEdit, install_masked_linears
from promptcl.taskid import cosine, gradient_id, prompt_id
from promptcl.taskid.gradient import entropy_logits, entropy_set_name
from promptcl.tuners.base import Batch, Tuner, TunerOutput, uniform_
from promptcl.tuners.dualprompt.config import DualPromptConfig
from promptcl.tuners.dualprompt.model import DualPrompt
from promptcl.tuners.editbank import TaskEditBank
from promptcl.tuners.l2p.config import L2PConfig
from promptcl.tuners.l2p.model import L2P
from promptcl.tuners.prompts import check_blocks

BASES: dict[str, type[Tuner]] = {"dualprompt": DualPrompt, "l2p": L2P}
TASK_ID_MODES = ("prompt", "gradient", "gradient-batch")


@dataclass
class EditOptions:
    """Options shared by every method of this family; each method's config adds its own."""

    base: str = field(
        default="dualprompt", metadata={"help": "Prompt method under the edits: dualprompt, l2p."}
    )
    dualprompt: DualPromptConfig = field(
        default_factory=DualPromptConfig, metadata={"help": "Options of the dualprompt base."}
    )
    l2p: L2PConfig = field(default_factory=L2PConfig, metadata={"help": "Options of the l2p base."})
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
            "gradient-batch (one task per batch: leaks task identity, flagged)."
        },
    )
    entropy_top: str = field(
        default="seen",
        metadata={
            "help": "Gradient ID's entropy: seen (all seen classes), top (their top C/T logits), "
            "reference (gradient-batch only; Soft-TF's code: top C/T of all classes, 7 samples)."
        },
    )
    key_pull_coeff: float = field(
        default=1.0,
        metadata={"help": "base l2p: weight of the loss pulling the task key to its queries."},
    )

    def __post_init__(self) -> None:
        if self.base not in BASES:
            raise ValueError(f"base must be one of {', '.join(BASES)}")
        if self.task_id not in TASK_ID_MODES:
            raise ValueError(f"task_id must be one of {', '.join(TASK_ID_MODES)}")
        self.entropy_top = entropy_set_name(self.entropy_top)
        if self.entropy_top == "reference" and self.task_id != "gradient-batch":
            raise ValueError(
                "entropy_top=reference needs task_id=gradient-batch (Soft-TF's one-shot form)"
            )


class EditTuner(Tuner):
    """Base class of softtf, wsn, lora and adapter: subclasses implement ``make_edit``."""

    needs_query = True
    # the wrapped layers' short names (Backbone.linear_paths); None: attention (+ MLP, ``mlp``)
    layer_names: ClassVar[Collection[str] | None] = None

    def __init__(self, config: EditOptions, backbone, num_classes: int) -> None:
        super().__init__(config, backbone, num_classes)
        self.base = BASES[config.base](getattr(config, config.base), backbone, num_classes)
        n = backbone.num_blocks
        blocks = config.blocks if config.blocks is not None else list(range(max(0, n - 3), n))
        self.edit_blocks = check_blocks(blocks, backbone, "blocks")
        mlp = config.mlp or self.layer_names is not None
        wrappers = install_masked_linears(backbone, self.edit_blocks, mlp, self.layer_names)
        self.edits = TaskEditBank(wrappers)
        self.task_keys = nn.ParameterList()  # base l2p: task t -> (d,)
        self.register_buffer("class_task", torch.full((num_classes,), -1, dtype=torch.long))
        self.params_per_task = 0

    def make_edit(self, layer: nn.Linear) -> WeightEdit | OutputEdit:
        """The new task's edit of one frozen layer."""
        raise NotImplementedError

    def begin_task(self, task: int, classes: Sequence[int]) -> None:
        before = self.num_trained_parameters()
        self.base.begin_task(task, classes)
        self.edits.add_task(self.make_edit)
        self.class_task[list(classes)] = task
        if isinstance(self.base, L2P):
            for old in self.task_keys:
                old.requires_grad_(False)
            a, device = self.base.config.prompt_init, self.class_task.device
            key = uniform_(torch.empty(self.backbone.dim), -a, a).to(device)
            self.task_keys.append(nn.Parameter(key))
        self.params_per_task = self.num_trained_parameters() - before

    def forward(self, batch: Batch, task: torch.Tensor | None = None) -> TunerOutput:
        if task is not None:
            with self.edits.use(task):
                return self.base(batch, task)
        # Gradient ID's superposed pass and the final pass share the blocks below the first
        # task-dependent one
        shared = self.config.task_id != "prompt"
        with self.backbone.shared_trunk(self.trunk_depth) if shared else nullcontext():
            task = self.infer_task(batch)
            with self.edits.use(task):
                out = self.base(batch, task)
        return replace(out, task_pred=task)

    @property
    def trunk_depth(self) -> int:
        """The first block whose computation depends on the task (edits, E-prompts)."""
        e_blocks = self.base.e_blocks if isinstance(self.base, DualPrompt) else []
        return min([*self.edit_blocks, *e_blocks], default=self.backbone.num_blocks - 1)

    def infer_task(self, batch: Batch) -> torch.Tensor:
        """(B,) task per sample (one task for the whole batch in gradient-batch mode)."""
        if self.config.task_id == "prompt":
            if isinstance(self.base, DualPrompt):
                return self.base.infer_task(batch)
            return prompt_id(batch.query, torch.stack(list(self.task_keys)))
        seen = (self.class_task >= 0).nonzero().squeeze(1)
        num_tasks = self.edits.num_tasks
        seen, top = entropy_logits(self.config.entropy_top, seen, self.num_classes, num_tasks)

        def logits_of(alpha: torch.Tensor) -> torch.Tensor:
            with self.edits.use(alpha):
                return self.base(batch, alpha).logits[:, seen]

        shared = self.config.task_id == "gradient-batch"
        size, device = batch.labels.shape[0], self.class_task.device
        return gradient_id(logits_of, size, num_tasks, top=top, shared=shared, device=device)

    def loss_terms(self, batch: Batch, out: TunerOutput, task: int) -> dict[str, torch.Tensor]:
        terms = self.base.loss_terms(batch, out, task)
        if isinstance(self.base, L2P):
            similarity = cosine(batch.query, self.task_keys[task].unsqueeze(0))  # (B, 1)
            terms["task_pull"] = self.config.key_pull_coeff * (1 - similarity).mean()
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
