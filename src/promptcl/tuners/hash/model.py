"""Hash: History-Aware prompt-SHaring ("Is Parameter Isolation Better for Prompt-Based
Continual Learning?", CVPR 2026).

Per prompted block l a pool of K prefix experts p_{l,k} (each 2 x L_p x d), shared by all
tasks. Task t owns a router W_r^{t,l} (d x K) per block: scores s = mean_seq(x W_r) / sqrt(d)
over the hidden states x entering block l; HDR lowers the scores of the protected experts
A_{t,l} (s~ = s - phi(H)); the top-k experts mix with w = softmax(s~ over the top-k) into the
instance prefix sum_k w_k p_{l,k}. HGM scales the updates of A_{t,l}'s experts by psi(H) (or adds
1/2 lambda H_e ||theta_e - theta_e^{(t-1)}||^2). H counts the training samples routed to each
expert, accumulated over tasks; A_t and the penalties are fixed at the start of task t and
stored with it, so inference with task t's router routes exactly as training did. The task is
inferred per sample by HiDe's TII; the head is re-aligned by TAP after each task.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from promptcl.backbones import Prefix, PrefixFn
from promptcl.backbones.base import masked_mean
from promptcl.tuners.base import Batch, TaskData, Tuner, TunerOutput, uniform_
from promptcl.tuners.hash.config import HashConfig
from promptcl.tuners.hash.routing import (
    MODULATIONS,
    PENALTIES,
    PROTECTIONS,
    later_tasks,
    protected_share,
    routed_drift,
    routing_entropy,
    usage_share,
)
from promptcl.tuners.prompts import check_blocks
from promptcl.tuners.stages import HiDeStages

Routing = dict[int, tuple[torch.Tensor, torch.Tensor]]  # block -> (top-k indices, weights)


class Hash(Tuner):
    name = "hash"
    description = "shared prefix-expert pool, per-task routers, HDR + HGM, TII + TAP (Hash)"
    config_class = HashConfig
    needs_query = True
    task_inference = "TII: a classifier on the frozen or first-session adapted query (tuner.tii.*)"

    def __init__(self, config: HashConfig, backbone, num_classes: int) -> None:
        super().__init__(config, backbone, num_classes)
        blocks = config.blocks
        if blocks is None:
            blocks = list(range(max(1, round(backbone.num_blocks / 3))))
        self.blocks = check_blocks(blocks, backbone, "blocks")
        n, K, d = len(self.blocks), config.num_experts, backbone.dim
        a = config.prompt_init
        # one parameter per expert, so that HGM can give each its own learning rate
        self.experts = nn.ParameterList(
            nn.Parameter(uniform_(torch.empty(2, config.length, d), -a, a)) for _ in range(n * K)
        )
        self.routers = nn.ParameterList()  # task t -> (n_blocks, d, K)
        self.register_buffer("usage", torch.zeros(0, n, K))  # routed samples per task
        self.register_buffer("protected", torch.zeros(0, n, K, dtype=torch.bool))  # A_t
        self.register_buffer("penalty", torch.zeros(0, n, K))  # phi(H) of task t, or 0
        self.register_buffer("update_scale", torch.ones(n, K))  # psi(H) of the current task
        self.register_buffer("experts_before", torch.zeros(n, K, 2, config.length, d))
        self.register_buffer("entropy", torch.zeros(0, n))  # mean routing entropy per task
        self.register_buffer("drift", torch.zeros(0, n, K))  # ||p_{l,k} after t - before t||
        self.head = nn.Linear(d, num_classes)
        self.stages = HiDeStages(d, num_classes, config.tii, config.tap, config.head, backbone)
        self.needs_query = not config.tii.adapt

    # -- task boundaries -----------------------------------------------------------------------

    def history(self) -> torch.Tensor:
        """H (n_blocks, K): routed training samples over every finished task."""
        return self.usage.sum(dim=0)

    def pool(self) -> torch.Tensor:
        n, K = len(self.blocks), self.config.num_experts
        return torch.stack(list(self.experts)).view(n, K, *self.experts[0].shape)

    def begin_task(self, task: int, classes: Sequence[int]) -> None:
        cfg, n, K = self.config, len(self.blocks), self.config.num_experts
        device = self.head.weight.device
        history = self.history()
        protected = PROTECTIONS[cfg.protection](history, cfg.num_protected, cfg.protect_share)
        penalty = PENALTIES[cfg.penalty](history, protected, cfg.delta) if cfg.hdr else 0 * history
        self.protected = torch.cat([self.protected, protected[None]])
        self.penalty = torch.cat([self.penalty, penalty[None]])
        self.usage = torch.cat([self.usage, torch.zeros(1, n, K, device=device)])
        self.entropy = torch.cat([self.entropy, torch.zeros(1, n, device=device)])
        self.drift = torch.cat([self.drift, torch.zeros(1, n, K, device=device)])
        scale = MODULATIONS[cfg.modulation](history, protected, cfg.beta)
        self.update_scale = scale if cfg.hgm == "scale" else torch.ones_like(scale)
        self.experts_before = self.pool().detach().clone()
        router = torch.randn(n, self.backbone.dim, K) * cfg.router_init
        self.routers.append(nn.Parameter(router.to(device)))
        for old in range(task):
            self.routers[old].requires_grad_(False)
        self.stages.begin_task(task, classes)

    def param_groups(self) -> list[dict[str, Any]]:
        scale = self.update_scale.flatten().tolist()
        groups = [{"params": [self.routers[-1], *self.head.parameters()]}]
        if adapted := self.stages.trainable():
            groups.append({"params": adapted})
        for value in sorted(set(scale)):
            experts = [e for e, s in zip(self.experts, scale, strict=True) if s == value]
            groups.append({"params": experts, "lr_scale": value})
        return groups

    # -- routing -------------------------------------------------------------------------------

    def route(
        self, index: int, x: torch.Tensor, keep: torch.Tensor | None, task: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Block ``index`` (position in self.blocks): top-k expert indices and weights, (B, k)."""
        routers = torch.stack(list(self.routers))[task, index]  # (B, d, K)
        scores = torch.einsum("bd,bdk->bk", masked_mean(x, keep), routers) / math.sqrt(x.shape[-1])
        scores = scores - self.penalty[task, index]  # HDR
        top = scores.topk(self.config.top_k, dim=-1)
        return top.indices, top.values.softmax(dim=-1)

    def prefix_fns(self, task: torch.Tensor, record: Routing | None = None) -> dict[int, PrefixFn]:
        pool = self.pool()  # (n_blocks, K, 2, L_p, d)

        def make(index: int) -> PrefixFn:
            def prefix(x: torch.Tensor, keep: torch.Tensor | None) -> Prefix:
                chosen, weights = self.route(index, x, keep, task)
                mixed = torch.einsum("bk,bkpld->bpld", weights, pool[index][chosen])
                if record is not None:
                    record[index] = (chosen, weights)
                return Prefix(mixed[:, 0], mixed[:, 1])

            return prefix

        return {block: make(i) for i, block in enumerate(self.blocks)}

    def forward(self, batch: Batch, task: torch.Tensor | None = None) -> TunerOutput:
        task_pred = None
        if task is None:
            task = task_pred = self.stages.task_of(batch, self.backbone)
        hidden, keep = self.backbone(batch.inputs, prefixes=self.prefix_fns(task))
        features = self.backbone.pool(hidden, keep)
        logits = self.stages.logits(features, self.head)
        return TunerOutput(logits, task_pred, extras={"features": features})

    def loss_terms(self, batch: Batch, out: TunerOutput, task: int) -> dict[str, torch.Tensor]:
        cfg, terms = self.config, self.stages.loss_terms(batch, self.backbone, task)
        if cfg.hgm == "quadratic" and task > 0:
            drift = (self.pool() - self.experts_before).pow(2).flatten(2).sum(-1)  # (n_blocks, K)
            terms["hgm"] = 0.5 * cfg.quadratic_lambda * (self.history() * drift).sum()
        if cfg.contrast_coeff > 0:  # the extension of issue 18: HiDe-Prompt's term
            features = out.extras["features"]
            terms["contrast"] = cfg.contrast_coeff * self.stages.contrast(
                features, task, cfg.contrast_temperature
            )
        return terms

    # -- after a task --------------------------------------------------------------------------

    @torch.no_grad()
    def end_task(self, task: int, classes: Sequence[int], data: TaskData) -> None:
        """Count routed samples (H), routing entropy, then TII and TAP on this task's data."""
        self.drift[task] = (self.pool() - self.experts_before).flatten(2).norm(dim=-1)

        def routed(batch: Batch) -> tuple[torch.Tensor, ...]:
            """Prompted feature (B, d), chosen experts (B, n_blocks, k), entropy (B, n_blocks)."""
            record: Routing = {}
            given = torch.full_like(batch.labels, task)
            hidden, keep = self.backbone(batch.inputs, prefixes=self.prefix_fns(given, record))
            blocks = range(len(self.blocks))
            chosen = torch.stack([record[i][0] for i in blocks], dim=1)
            entropy = torch.stack([routing_entropy(record[i][1]) for i in blocks], dim=1)
            return self.backbone.pool(hidden, keep), chosen, entropy

        features, chosen, entropy = data.map(routed)
        for i in range(len(self.blocks)):
            counts = torch.bincount(chosen[:, i].flatten(), minlength=self.usage.shape[-1])
            self.usage[task, i] = counts.to(self.usage.dtype)
        self.entropy[task] = entropy.mean(dim=0)
        self.stages.end_task(task, classes, data, features, self.head, self.backbone)

    # -- reporting -----------------------------------------------------------------------------

    def report(self) -> dict[str, Any]:
        """Routing statistics and the diagnostics of forgetting (docs/METHODS.md, Hash):
        expert_drift[t][l][k] = ||p_{l,k} after task t - before task t||; for an old task j and
        a later task t (mean over blocks), the share of j's routed mass on A_t's experts and the
        routing-weighted drift of j's experts during t."""
        shared = protected_share(self.usage, self.protected).mean(dim=-1)
        moved = routed_drift(self.usage, self.drift).mean(dim=-1)
        return {
            "routing_entropy": self.entropy.mean(dim=1).tolist(),
            "expert_usage": self.usage.tolist(),
            "protected_experts": [p.nonzero().tolist() for p in self.protected],
            "expert_drift": self.drift.tolist(),
            "protected_share": later_tasks(shared),
            "routed_drift": later_tasks(moved),
        }

    def heatmaps(self) -> dict[str, dict[str, Any]]:
        usage = usage_share(self.usage)
        rows = [str(t + 1) for t in range(len(usage))]
        maps = {}
        for i, block in enumerate(self.blocks):
            maps[f"expert_usage_block{block}"] = {
                "matrix": (100 * usage[:, i]).tolist(),
                "row_label": "task",
                "col_label": "expert",
                "row_names": rows,
                "title": f"share of routed samples (%), block {block}",
            }
            maps[f"expert_drift_block{block}"] = {
                "matrix": self.drift[:, i].tolist(),
                "row_label": "task",
                "col_label": "expert",
                "row_names": rows,
                "title": f"expert drift ||p after task - before||, block {block}",
                "fmt": ".1f",
            }
        maps["protected_share"] = {
            "matrix": [
                [None if v is None else 100 * v for v in row]
                for row in later_tasks(protected_share(self.usage, self.protected).mean(dim=-1))
            ],
            "row_label": "old task j",
            "col_label": "training task t",
            "row_names": rows,
            "col_names": rows,
            "title": "share of task j's routing on protected experts A_t (%)",
        }
        return maps
