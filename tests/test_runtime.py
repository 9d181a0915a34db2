"""The shared training pieces: the optimisation step, optimiser, schedule and seeds."""

import pytest
import torch
from torch import nn

from promptcl.config import TrainConfig
from promptcl.runtime import (
    NonFiniteLoss,
    cosine_lr,
    epoch_order,
    make_optimizer,
    optimisation_steps,
    set_epoch_lr,
)


def test_one_step_per_batch_with_clipping():
    weight = nn.Parameter(torch.zeros(3))
    optimizer = torch.optim.SGD([weight], lr=1.0)
    batches = [torch.tensor([3.0, 4.0, 0.0]), torch.tensor([0.0, 0.0, 1.0])]

    def loss_terms(target):  # gradient of -<w, t> is -t: norm 5, then 1
        return {"dot": -(weight * target).sum(), "zero": weight.sum() * 0}

    steps = list(optimisation_steps(batches, loss_terms, optimizer, grad_clip=1.0))
    assert [set(s) for s in steps] == [{"dot", "zero"}] * 2
    # the first gradient (norm 5) is clipped to norm 1, the second (norm 1) is not
    assert torch.allclose(weight.detach(), torch.tensor([0.6, 0.8, 1.0]))


def test_a_non_finite_loss_stops_before_the_step():
    weight = nn.Parameter(torch.ones(2))
    optimizer = torch.optim.SGD([weight], lr=0.1)

    def loss_terms(scale):
        return {"ce": (weight * scale).sum()}

    batches = [torch.tensor(1.0), torch.tensor(float("nan"))]
    with pytest.raises(NonFiniteLoss, match="non-finite loss \\(ce=nan\\) in task 1, step 2"):
        list(optimisation_steps(batches, loss_terms, optimizer, where="task 1"))
    assert torch.allclose(weight.detach(), torch.full((2,), 0.9))  # only the first step ran


def test_an_update_that_overflows_is_a_non_finite_loss():
    """Adam's first step moves by lr / (1 - beta1): lr=1e38 overflows float32 in the step
    itself, whatever the gradient; the run stops as at a NaN loss, the parameters untouched."""
    weight = nn.Parameter(torch.ones(2))
    optimizer = torch.optim.Adam([weight], lr=1e38)
    batches = [torch.tensor(1.0)]
    with pytest.raises(NonFiniteLoss, match="non-finite loss \\(the optimiser's update overflowed"):
        list(optimisation_steps(batches, lambda s: {"ce": (weight * s).sum()}, optimizer))
    assert torch.equal(weight.detach(), torch.ones(2))


def test_optimiser_groups_schedule_and_seeds():
    a, b = nn.Parameter(torch.zeros(1)), nn.Parameter(torch.zeros(1))
    cfg = TrainConfig(lr=0.1, schedule="cosine", warmup_epochs=1, warmup_lr=1e-3, epochs=3)
    optimizer = make_optimizer(cfg, [{"params": [a]}, {"params": [b], "lr_scale": 0.5}])
    assert [g["lr"] for g in optimizer.param_groups] == [0.1, 0.05]
    assert set_epoch_lr(optimizer, cfg, 0) == 1e-3
    assert [g["lr"] for g in optimizer.param_groups] == [1e-3, 5e-4]
    sgd = make_optimizer(TrainConfig(optimizer="sgd", momentum=0.5), [{"params": [a]}])
    assert isinstance(sgd, torch.optim.SGD) and sgd.param_groups[0]["momentum"] == 0.5
    assert epoch_order(10, 0, 1, 2) == epoch_order(10, 0, 1, 2) != epoch_order(10, 0, 1, 3)
    assert sorted(epoch_order(10, 0, 1, 2)) == list(range(10))


def test_cosine_lr_is_torchs_cosine_annealing():
    """HiDe steps torch's CosineAnnealingLR (a recursive form); the closed form agrees with it
    to rounding."""
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.005)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=30)
    for epoch in range(30):
        assert cosine_lr(0.005, epoch, 30) == pytest.approx(schedule.get_last_lr()[0], rel=1e-14)
        optimizer.step()
        schedule.step()
    assert cosine_lr(0.005, 0, 30) == 0.005  # exact: one-epoch stages train at lr
