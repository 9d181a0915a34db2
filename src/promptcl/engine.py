"""The engine under every training command: Lightning Fabric owns devices, precision, process
launch and loggers; the loops stay ours (protocols/continual.py, protocols/b2n.py, nanoGPT-style).

Several processes (DDP, ``train.devices`` > 1, or torchrun / SLURM, which Fabric detects):

- training: each global batch of ``train.batch_size`` samples (a slice of the epoch's seeded
  order) is cut into one disjoint share per rank (``Engine.shard``); a rank's loss terms are
  weighted by its share of the global batch, so their sum over ranks is the global batch's
  mean and DDP's gradient average gives the one-process gradient (up to the order of the
  floating-point sums). A last global batch with fewer samples than ranks is dropped.
- evaluation and frozen-feature caches: whole batches go round-robin to the ranks and the
  results are summed (counts, or features that are zero on the other ranks), so they equal
  the one-process values exactly;
- end of task: the forward passes that statistics are taken from (prompted features, Hash's
  routing) go round-robin over whole batches and are summed the same way (``TaskData.map``),
  so every rank holds the one-process tensors; the statistics computed from them (class
  means, Gaussians, usage counts, LDA / RanPAC sums over the cached queries) and the stages
  that sample (TII, TAP) then run on every rank from rank 0's random state, broadcast first,
  so every rank holds the same state;
- only rank 0 writes the run directory; the others wait at a barrier.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, TypeVar

import torch
from lightning_fabric import Fabric
from lightning_fabric.loggers import CSVLogger
from lightning_fabric.strategies import DDPStrategy
from torch import nn

from promptcl.backbones.precision import FrozenBF16Precision
from promptcl.errors import UsageError
from promptcl.loggers import build_loggers, final_figures

T = TypeVar("T")

PRECISIONS = ("32-true", "bf16-mixed", "16-mixed", "bf16-true")
STRATEGIES = ("auto", "ddp")


class LossModule(nn.Module):
    """One step's loss terms as a module's forward, so that DDP sees every trained tensor the
    loss uses (regularisers computed outside the tuner's forward included)."""

    def __init__(self, owner: nn.Module, loss_terms: Callable[[Any], dict[str, torch.Tensor]]):
        super().__init__()
        self.owner = owner
        self.loss_terms = loss_terms

    def forward(self, batch: Any) -> dict[str, torch.Tensor]:
        return self.loss_terms(batch)


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 matrix products natively (AVX512-BF16 or AMX, as oneDNN
    sees it). Without it PyTorch emulates them, 20-100x slower than fp32
    (a 1024 x 1024 product: 100x; a MiniLM DualPrompt step: 18x, on an AVX2 EPYC)."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def _fabric(cfg: Any, loggers: list) -> Fabric:
    """Fabric for train.accelerator / devices / strategy / num_nodes / precision."""
    cuda = cfg.accelerator in ("cuda", "gpu") or (
        cfg.accelerator == "auto" and torch.cuda.is_available()
    )
    if cfg.precision == "16-mixed" and not cuda:  # Fabric would switch to bf16 with a warning
        raise UsageError("train.precision=16-mixed needs CUDA; on the CPU use bf16-mixed")
    if cfg.precision.startswith("bf16") and not cuda and not cpu_has_bf16():
        warnings.warn(
            f"train.precision={cfg.precision} on a CPU without native bf16 (AVX512-BF16 or AMX) "
            "runs many times slower than 32-true; use train.precision=32-true here",
            stacklevel=2,
        )
    kwargs = {
        "accelerator": cfg.accelerator,
        "devices": cfg.devices,
        "num_nodes": cfg.num_nodes,
        "loggers": loggers,
    }
    if cfg.precision == "bf16-true":  # the frozen backbone in bf16, trained tensors in fp32
        kwargs["plugins"] = FrozenBF16Precision("cuda" if cuda else "cpu")
    else:
        kwargs["precision"] = cfg.precision
    try:
        fabric = Fabric(strategy="auto", **kwargs)
        if cfg.strategy == "ddp" or fabric.world_size > 1:
            # trained tensors a step leaves unused (unrouted experts, old tasks' prompts)
            fabric = Fabric(strategy=DDPStrategy(find_unused_parameters=True), **kwargs)
    except (RuntimeError, ValueError, TypeError) as err:
        message = str(err).strip().splitlines()[0]
        raise UsageError(f"bad train.accelerator/devices/strategy: {message}") from None
    return fabric


class Engine:
    """Devices, precision, processes and loggers of one command, from its ``train`` keys."""

    def __init__(self, cfg: Any, log_root: Path | None = None) -> None:
        self.cfg = cfg
        self.fabric = _fabric(cfg, build_loggers(cfg.logger, log_root))

    # -- processes -----------------------------------------------------------------------------

    def launch(self) -> None:
        """Start the other processes (``train.devices`` > 1 on one machine: Fabric runs this
        command again in each) or join those that torchrun / SLURM started."""
        self.fabric.launch()

    @property
    def device(self) -> torch.device:
        return self.fabric.device

    @property
    def rank(self) -> int:
        return self.fabric.global_rank

    @property
    def world_size(self) -> int:
        return self.fabric.world_size

    @property
    def is_main(self) -> bool:
        return self.fabric.is_global_zero

    def barrier(self) -> None:
        if self.world_size > 1:
            self.fabric.barrier()

    def on_main(self, fn: Callable[[], T]) -> T | None:
        """Run ``fn`` on rank 0 only; a UsageError it raises is raised on every rank."""
        error, result = None, None
        if self.is_main:
            try:
                result = fn()
            except UsageError as err:
                error = str(err)
        if self.world_size > 1:
            error = self.fabric.broadcast(error)
        if error is not None:
            raise UsageError(error)
        return result

    # -- data ----------------------------------------------------------------------------------

    def shard(self, items: Sequence[T]) -> Sequence[T]:
        """This rank's share of ``items`` (every world_size-th, from its rank)."""
        return items[self.rank :: self.world_size]

    def global_batches(self, chunks: Sequence[Sequence[int]]) -> list[tuple[list[int], int]]:
        """This rank's share of each global batch, with the global batch's size."""
        n = self.world_size
        return [(list(self.shard(chunk)), len(chunk)) for chunk in chunks if len(chunk) >= n]

    def sum_over_ranks(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum over ranks (the tensor itself in one process)."""
        if self.world_size == 1:
            return tensor
        return self.fabric.all_reduce(tensor, reduce_op="sum")

    def same_random_state(self) -> None:
        """Every rank continues from rank 0's torch random state (sampling stages agree)."""
        if self.world_size > 1:
            state = self.fabric.broadcast(torch.get_rng_state())
            torch.set_rng_state(state)
            if torch.cuda.is_available():
                torch.cuda.set_rng_state(self.fabric.broadcast(torch.cuda.get_rng_state()))

    # -- one optimisation step -----------------------------------------------------------------

    def autocast(self) -> AbstractContextManager:
        """The precision's forward context (autocast for the mixed precisions)."""
        return self.fabric.autocast()

    def prepare(self, module: nn.Module) -> nn.Module:
        """``module`` on the device in the precision's storage (bf16-true: frozen backbones in
        bf16); once, before training, evaluation or feature caching touch it."""
        return self.fabric.strategy.precision.convert_module(module).to(self.device)

    def setup(
        self, owner: nn.Module, loss_terms: Callable[[Any], dict[str, torch.Tensor]], optimizer
    ) -> tuple[nn.Module, torch.optim.Optimizer]:
        """The loss as a module on the engine (DDP with several processes) and its optimiser."""
        module = self.fabric.setup_module(LossModule(owner, loss_terms))
        return module, self.fabric.setup_optimizers(optimizer)

    def backward(self, loss: torch.Tensor) -> None:
        """Backward of this rank's weighted loss; DDP averages over ranks, so scale back."""
        self.fabric.backward(loss * self.world_size if self.world_size > 1 else loss)

    def clip(self, optimizer: torch.optim.Optimizer, max_norm: float) -> None:
        """Clip the optimiser's gradients by their global norm (unscaled first under 16-mixed)."""
        self.fabric.strategy.precision.unscale_gradients(optimizer)
        params = [p for group in optimizer.param_groups for p in group["params"]]
        nn.utils.clip_grad_norm_(params, max_norm)

    # -- loggers -------------------------------------------------------------------------------

    def log(self, metrics: dict[str, float], step: int) -> None:
        if self.fabric.loggers:
            self.fabric.log_dict(metrics, step=step)

    def log_config(self, config: dict[str, Any]) -> None:
        """The run's config, to the loggers that keep one (CSV: config.json holds it)."""
        for logger in self.fabric.loggers:
            if not isinstance(logger, CSVLogger):
                logger.log_hyperparams(config)

    def log_final(self, metrics: dict[str, Any], step: int) -> None:
        """The run's final figures (metrics.json's numbers) as ``final/NAME`` at ``step``."""
        self.log(final_figures(metrics), step)

    def finish_logging(self) -> None:
        for logger in self.fabric.loggers:
            logger.finalize("success")

    def say(self, line: str) -> None:
        """A line that stays on the terminal (rank 0), above any progress bar."""
        if self.is_main and self.cfg.progress:
            from tqdm.auto import tqdm

            tqdm.write(line, file=sys.stderr)

    def describe(self) -> dict[str, Any]:
        """The engine's settings, for metrics.json."""
        return {
            "device": str(self.device),
            "precision": self.cfg.precision,
            "world_size": self.world_size,
            "strategy": type(self.fabric.strategy).__name__,
            "compile": self.cfg.compile,
        }
