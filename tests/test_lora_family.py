"""InfLoRA and SD-LoRA: their defining invariants, DualGPM on hand-worked matrices, and the
shared query/key/value updates on a fused (timm) and a separate (BERT) projection."""

import pytest
import torch
from test_learner import tiny
from test_tuners import NUM_CLASSES, make

from promptcl import run
from promptcl.backbones.hf import tiny_bert
from promptcl.backbones.vit import tiny_vit
from promptcl.core.checkpoint import load_checkpoint
from promptcl.tuners import Batch, TaskData
from promptcl.tuners.inflora.subspace import design_down_projection, grow_basis
from promptcl.tuners.lowrank import projection_edits
from promptcl.tuners.sdlora.model import inverse_norm

TASKS = [[0, 1, 2], [3, 4, 5], [0, 1, 2]]


@pytest.fixture(scope="module")
def backbone():
    return tiny_bert()


def batches(backbone, task, n=3, size=8):
    """Task ``task``'s batches: its own token range, so that tasks differ in their inputs."""
    g = torch.Generator().manual_seed(task)
    out = []
    for _ in range(n):
        ids = torch.randint(1000 + 3000 * task, 4000 + 3000 * task, (size, 7), generator=g)
        mask = torch.ones_like(ids)
        mask[0, 5:] = 0
        labels = torch.tensor(TASKS[task])[torch.randint(0, 3, (size,), generator=g)]
        out.append(Batch({"input_ids": ids, "attention_mask": mask}, labels, torch.arange(size)))
    return out


def train(tuner, task, data, steps=3):
    """A few Adam steps on the task's batches, other tasks' logits masked (the protocol's loss)."""
    tuner.train()
    params = [p for group in tuner.param_groups() for p in group["params"]]
    optimiser = torch.optim.Adam(params, lr=0.05)
    outside = torch.ones(NUM_CLASSES, dtype=torch.bool)
    outside[TASKS[task]] = False
    for step in range(steps):
        batch = data[step % len(data)]
        out = tuner(batch, task=torch.full_like(batch.labels, task))
        logits = out.logits.masked_fill(outside, -1e9)
        loss = torch.nn.functional.cross_entropy(logits, batch.labels)
        tuner.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
    tuner.eval()


def snapshot(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


# -- DualGPM and the down-projection, by hand ------------------------------------------------


def test_first_task_basis_keeps_the_directions_below_the_threshold():
    # singular values 9, 4, 1: energy shares 81/98, 97/98, 1
    C = torch.diag(torch.tensor([9.0, 4.0, 1.0, 0.0]))
    assert grow_basis(torch.zeros(4, 0), C, 0.95).abs().tolist() == [[1.0], [0.0], [0.0], [0.0]]
    two = grow_basis(torch.zeros(4, 0), C, 0.99).abs()
    assert two.tolist() == [[1.0, 0.0], [0.0, 1.0], [0.0, 0.0], [0.0, 0.0]]
    # every share is >= the threshold: still one direction (the code's max(r, 1))
    assert grow_basis(torch.zeros(4, 0), C, 0.5).shape == (4, 1)


def test_later_basis_grows_by_the_residual_until_the_threshold():
    e1 = torch.eye(4)[:, :1]
    # ||C||^2 = 1 + 16; inside span(e1): 1/17 = 0.059; the residual's direction e3 adds 16/17
    C = torch.diag(torch.tensor([1.0, 0.0, 4.0, 0.0]))
    grown = grow_basis(e1, C, 0.95)
    assert grown.shape == (4, 2) and grown[:, 0].tolist() == e1[:, 0].tolist()
    assert grown[:, 1].abs().tolist() == [0.0, 0.0, 1.0, 0.0]
    assert grow_basis(e1, C, 0.05).shape == (4, 1)  # 0.059 >= 0.05 already: unchanged


def test_down_projection_is_the_top_residual_direction_scaled():
    C = torch.diag(torch.tensor([9.0, 4.0, 1.0, 0.0]))
    A = design_down_projection(C, torch.eye(4)[:, :1], rank=1)
    torch.testing.assert_close(A.abs(), torch.tensor([[0.0, 1.0, 0.0, 0.0]]) / 3**0.5)


# -- InfLoRA on a tiny BERT -------------------------------------------------------------------


def run_inflora_task(tuner, backbone, task):
    data = batches(backbone, task)
    tuner.begin_task(task, TASKS[task])
    tuner.prepare_task(task, TASKS[task], TaskData(data))
    train(tuner, task, data)
    tuner.end_task(task, TASKS[task], TaskData(data))


def test_inflora_new_down_projection_is_orthogonal_to_the_stored_subspace(backbone):
    tuner = make("inflora", backbone, rank=4)
    run_inflora_task(tuner, backbone, 0)
    bases = tuner.bases()
    assert all(0 < b.shape[1] <= backbone.dim - 4 for b in bases)
    tuner.begin_task(1, TASKS[1])
    tuner.prepare_task(1, TASKS[1], TaskData(batches(backbone, 1)))
    for k, basis in enumerate(bases):
        for part in ("key", "value"):
            A = tuner.branches[1][k].A[part]
            assert (A @ basis).abs().max() < 1e-5
            # rows orthogonal, of norm 1/sqrt(3)
            torch.testing.assert_close(A @ A.T, torch.eye(4) / 3, atol=1e-5, rtol=0)


def test_inflora_trains_only_the_current_B_and_the_head_and_keeps_old_branches(backbone):
    tuner = make("inflora", backbone, rank=4)
    run_inflora_task(tuner, backbone, 0)
    old = snapshot(tuner.branches[0])
    data = batches(backbone, 1)
    tuner.begin_task(1, TASKS[1])
    tuner.prepare_task(1, TASKS[1], TaskData(data))
    designed = snapshot(tuner.branches[1])
    train(tuner, 1, data, steps=1)
    moved = {n for n, p in tuner.named_parameters() if p.grad is not None and p.grad.any()}
    assert moved and all(n.startswith(("branches.1.", "head.")) and ".A." not in n for n in moved)
    assert any(".B.key" in n for n in moved) and any(".B.value" in n for n in moved)
    train(tuner, 1, data)
    for name, value in snapshot(tuner.branches[0]).items():
        assert torch.equal(value, old[name]), name
    for name, value in snapshot(tuner.branches[1]).items():
        assert torch.equal(value, designed[name]) == (".A." in name), name
    tuner.end_task(1, TASKS[1], TaskData(data))
    assert all(b.shape[1] >= 1 for b in tuner.bases())


def test_inflora_threshold_grows_with_the_classes_seen(backbone):
    tuner = make("inflora", backbone, rank=4, threshold=0.5, threshold_end=1.0)
    run_inflora_task(tuner, backbone, 0)
    sizes = tuner.basis_size.clone()
    run_inflora_task(tuner, backbone, 1)  # its threshold: 0.5 + 0.5 * 3/6
    assert (tuner.basis_size >= sizes).all() and tuner.seen.all()


def direction(pair, part):
    return pair.product(part) * inverse_norm(pair, part)


# -- SD-LoRA ------------------------------------------------------------------------------------


def test_sdlora_update_is_the_normalised_old_directions_plus_the_new_branch(backbone):
    tuner = make("sdlora", backbone, rank=2)
    tuner.begin_task(0, TASKS[0])
    with torch.no_grad():
        tuner.branches[0][0].B["query"].fill_(2.0)
    tuner.begin_task(1, TASKS[1])
    with torch.no_grad():
        tuner.branches[1][0].B["query"].fill_(0.5)
        tuner.magnitude.copy_(torch.tensor([1.5, 0.25]))
    old, new = tuner.branches[0][0], tuner.branches[1][0]
    B0, A0 = old.B["query"], old.A["query"]
    expected = 1.5 * B0 @ A0 / (B0.norm() * A0.norm()) + 0.25 * new.B["query"] @ new.A["query"]
    torch.testing.assert_close(tuner.updates()[0]["query"], expected)
    # the old value branch never left zero: no direction, no NaN
    assert torch.equal(direction(old, "value"), torch.zeros_like(direction(old, "value")))


def test_sdlora_keeps_old_directions_and_trains_their_magnitudes(backbone):
    tuner = make("sdlora", backbone)
    data = batches(backbone, 0)
    tuner.begin_task(0, TASKS[0])
    train(tuner, 0, data)
    old = snapshot(tuner.branches[0])
    directions = [direction(pair, "value").detach() for pair in tuner.branches[0]]
    tuner.begin_task(1, TASKS[1])
    assert tuner.magnitude.tolist() == pytest.approx([0.8, 0.8])  # every magnitude restarts
    data = batches(backbone, 1)
    train(tuner, 1, data, steps=1)
    moved = {n for n, p in tuner.named_parameters() if p.grad is not None and p.grad.any()}
    assert "magnitude" in moved and not any(n.startswith("branches.0.") for n in moved)
    assert any(n.startswith("branches.1.") and ".B." in n for n in moved)
    assert all(p.requires_grad for p in tuner.branches[1].parameters())  # A too (zero grad at B=0)
    train(tuner, 1, data)
    for name, value in snapshot(tuner.branches[0]).items():
        assert torch.equal(value, old[name]), name
    for pair, before in zip(tuner.branches[0], directions, strict=True):
        assert torch.equal(direction(pair, "value"), before)
    assert tuner.magnitude[0].item() != pytest.approx(0.8)


def test_sdlora_rr_reduces_the_rank_of_later_tasks(backbone):
    tuner = make("sdlora", backbone, ranks=[3, 2])
    for task, classes in enumerate(TASKS):
        tuner.begin_task(task, classes)
    assert tuner.report()["ranks"] == [3, 2, 2]


# -- the shared updates of the attention projections -------------------------------------------


def test_key_update_fills_its_rows_of_a_fused_qkv_and_a_separate_key():
    vit, bert = tiny_vit(), tiny_bert()
    D = torch.randn(32, 32)
    fused = projection_edits(vit, [1], [{"key": D}])[1]["qkv"].delta
    torch.testing.assert_close(fused, torch.cat([torch.zeros(32, 32), D, torch.zeros(32, 32)]))
    assert torch.equal(projection_edits(bert, [0], [{"key": D}])[0]["key"].delta, D)
    both = projection_edits(vit, [0], [{"query": D, "value": 2 * D}])[0]["qkv"].delta
    assert torch.equal(both[:32], D) and torch.equal(both[64:], 2 * D) and not both[32:64].any()


def test_a_run_designs_every_task_s_down_projection_before_training_it(tmp_path):
    """The protocol calls prepare_task: each stored A has orthogonal rows of norm 1/sqrt(3),
    which a Kaiming-uniform start has not."""
    run(tiny("method=inflora", "tuner.rank=2"), tmp_path / "run")
    tensors = load_checkpoint(tmp_path / "run" / "checkpoint")[0]
    designed = [v for k, v in tensors.items() if ".A." in k]
    assert len(designed) > 2
    for A in designed:
        torch.testing.assert_close(A @ A.T, torch.eye(2) / 3, atol=1e-5, rtol=0)
