"""Gradient ID and the per-task edit baselines (WSN, LoRA, adapters) of Soft-TF."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from promptcl.backbones.hf import tiny_bert
from promptcl.config import build_dataclass
from promptcl.errors import UsageError
from promptcl.taskid import entropy, gradient_id
from promptcl.taskid.gradient import LogitSet, entropy_logits
from promptcl.tuners import Batch, get_tuner
from promptcl.tuners.wsn.model import BinaryMask

NUM_CLASSES = 9
TASKS = [[0, 1, 2], [3, 4, 5], [6, 7, 8]]


@pytest.fixture(scope="module")
def backbone():
    return tiny_bert()


def make(name, backbone, **options):
    cls = get_tuner(name)
    torch.manual_seed(0)
    return cls(build_dataclass(cls.config_class, options, name), backbone, NUM_CLASSES)


def make_batch(backbone, n=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000, 2000, (n, 6), generator=g)
    mask = torch.ones_like(ids)
    mask[0, 4:] = 0
    inputs = {"input_ids": ids, "attention_mask": mask}
    labels = torch.tensor([0, 4, 8, 1, 5, 7, 2, 3, 6][:n])
    return Batch(inputs, labels, torch.arange(n), backbone.features(inputs))


def subset(batch, rows):
    inputs = {k: v[rows] for k, v in batch.inputs.items()}
    return Batch(inputs, batch.labels[rows], batch.index[rows], batch.query[rows])


def seen_tasks(tuner, count):
    for task in range(count):
        tuner.begin_task(task, TASKS[task])
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # make the tasks' edits differ
        for edits in tuner.edits.values():
            for e in edits:
                for p in e.parameters():
                    p.add_(0.3 * torch.randn(p.shape, generator=g))
    return tuner.eval()


# -- the Gradient ID component --------------------------------------------------------------


def superposed_classifier(alpha, x, weights):
    """logits_b = x_b (sum_i alpha_{b,i} W_i)^T: a network linear in alpha."""
    return torch.einsum("bd,bt,tcd->bc", x, alpha, weights)


def test_entropy_by_hand():
    logits = torch.tensor([[0.0, 0.0, 0.0, 0.0], [0.0, 0.0, -1e9, -1e9]])
    torch.testing.assert_close(entropy(logits), torch.log(torch.tensor([4.0, 2.0])))
    torch.testing.assert_close(entropy(logits[:1], top=2), torch.log(torch.tensor([2.0])))


def test_gradient_id_picks_the_task_that_sharpens_each_sample():
    # task 0's classifier is confident on e_0-like inputs, task 1's on e_1-like ones, task 2's
    # is flat: raising a sample's own task's weight lowers its entropy most
    d = 3
    weights = torch.zeros(3, 4, d)
    weights[0, 0, 0] = 5.0  # class 0 from feature 0
    weights[1, 2, 1] = 5.0  # class 2 from feature 1
    x = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0, 1.0, 0.2], [1.0, 0, 0.3]])
    tasks = gradient_id(lambda a: superposed_classifier(a, x, weights), 4, 3)
    assert tasks.tolist() == [0, 1, 1, 0]
    alone = [
        gradient_id(lambda a, one=x[b : b + 1]: superposed_classifier(a, one, weights), 1, 3)
        for b in range(4)
    ]
    assert torch.cat(alone).tolist() == tasks.tolist()  # per sample = each sample alone
    # the batch mode names one task for the whole batch, from the summed entropy gradient
    shared = gradient_id(lambda a: superposed_classifier(a, x, weights), 4, 3, shared=True)
    assert shared.tolist() in ([0] * 4, [1] * 4)
    x_task0 = x[[0, 3]]
    assert gradient_id(
        lambda a: superposed_classifier(a, x_task0, weights), 2, 3, shared=True
    ).tolist() == [0, 0]


def test_gradient_id_works_under_no_grad():
    weights = torch.randn(2, 3, 4)
    x = torch.randn(5, 4)
    with torch.no_grad():
        tasks = gradient_id(lambda a: superposed_classifier(a, x, weights), 5, 2)
    assert tasks.shape == (5,) and tasks.dtype == torch.long


# -- Gradient ID in the tuners ----------------------------------------------------------------


@pytest.mark.parametrize("name", ["softtf", "wsn", "lora", "adapter"])
def test_per_sample_gradient_id_equals_each_sample_alone(name, backbone):
    tuner = seen_tasks(make(name, backbone, task_id="gradient"), 3)
    batch = make_batch(backbone, n=6)
    with torch.no_grad():
        out = tuner(batch)
        for b in range(6):
            alone = tuner(subset(batch, [b]))
            assert alone.task_pred.item() == out.task_pred[b].item()
            torch.testing.assert_close(out.logits[b], alone.logits[0], atol=1e-5, rtol=1e-5)
        # the prediction runs with the inferred task's edits and E-prompt
        chosen = tuner(batch, task=out.task_pred).logits
    torch.testing.assert_close(out.logits, chosen)
    assert not tuner.leaks_task_identity


@pytest.mark.parametrize("top", [None, 3])
def test_gradient_id_matches_the_entropy_gradient_of_the_superposed_network(backbone, top):
    # top=3: entropy over the top C/T = 9/3 logits (entropy_top=top)
    mode = "seen" if top is None else "top"
    tuner = seen_tasks(make("softtf", backbone, task_id="gradient", entropy_top=mode), 3)
    batch = make_batch(backbone, n=3)
    seen = torch.tensor([c for classes in TASKS for c in classes])
    expected = []
    for b in range(3):  # by hand: alpha = 1/3 per task, superposed masks and E-prompts
        one = subset(batch, [b])
        alpha = torch.full((1, 3), 1 / 3, requires_grad=True)
        logits = tuner.base(one, alpha, edits=tuner.edits.choice(alpha)).logits[:, seen]
        if top is not None:
            logits = logits.topk(top, dim=1).values
        h = -(logits.softmax(1) * logits.log_softmax(1)).sum()
        (grad,) = torch.autograd.grad(h, alpha)
        expected.append(int((-grad).argmax()))
    with torch.no_grad():
        assert tuner(batch).task_pred.tolist() == expected


def test_entropy_logit_sets():
    seen = torch.arange(6)  # 2 tasks of 3 seen, 9 classes in the stream
    columns, kept = entropy_logits("seen", seen, 9, 2)
    assert torch.equal(columns, seen) and kept == LogitSet()
    columns, kept = entropy_logits("top", seen, 9, 2)
    assert torch.equal(columns, seen) and kept == LogitSet(top=3)  # ceil(6 / 2)
    columns, kept = entropy_logits("reference", seen, 9, 2)
    assert torch.equal(columns, torch.arange(9)) and kept == LogitSet(top=4, rows=7)  # 9 // 2
    with pytest.raises(ValueError, match="one alpha per batch"):
        gradient_id(lambda a: a, 3, 3, top=kept)


def test_reference_entropy_reads_all_classes_of_the_first_seven_samples(backbone):
    tuner = seen_tasks(
        make("softtf", backbone, task_id="gradient-batch", entropy_top="reference"), 2
    )
    batch = make_batch(backbone, n=9)
    alpha = torch.full((1, 2), 1 / 2, requires_grad=True)  # by hand: one alpha, 2 seen tasks
    edits = tuner.edits.choice(alpha.expand(9, 2))
    logits = tuner.base(batch, alpha.expand(9, 2), edits=edits).logits  # all 9 classes, 3 unseen
    assert logits.shape == (9, NUM_CLASSES)
    logits = logits[:7].topk(NUM_CLASSES // 2, dim=1).values
    h = -(logits.softmax(1) * logits.log_softmax(1)).sum(1).mean()
    (grad,) = torch.autograd.grad(h, alpha)
    with torch.no_grad():
        pred = tuner(batch).task_pred
        # samples 8 and 9 do not enter the entropy
        assert torch.equal(tuner(subset(batch, list(range(7)))).task_pred, pred[:7])
    assert pred.tolist() == [int((-grad).argmax())] * 9


@pytest.mark.parametrize(
    ("options", "expected"),
    [({"entropy_top": True}, "top"), ({"entropy_top": False}, "seen"), ({}, "seen")],
)
def test_entropy_top_reads_the_former_booleans(backbone, options, expected):
    assert make("softtf", backbone, **options).config.entropy_top == expected


@pytest.mark.parametrize("task_id", ["prompt", "gradient"])
def test_reference_entropy_needs_the_batch_mode(backbone, task_id):
    with pytest.raises(UsageError, match="needs task_id=gradient-batch"):
        make("softtf", backbone, task_id=task_id, entropy_top="reference")
    with pytest.raises(UsageError, match="entropy_top='all'"):
        make("softtf", backbone, task_id=task_id, entropy_top="all")


def test_batch_mode_is_flagged_and_names_one_task(backbone):
    tuner = seen_tasks(make("softtf", backbone, task_id="gradient-batch"), 3)
    assert tuner.leaks_task_identity
    with torch.no_grad():
        pred = tuner(make_batch(backbone, n=6)).task_pred
    assert len(set(pred.tolist())) == 1


@pytest.mark.parametrize("base", ["dualprompt", "l2p"])
def test_gradient_id_runs_the_task_independent_blocks_once(base, backbone, monkeypatch):
    tuner = seen_tasks(make("softtf", backbone, base=base, blocks=[1], task_id="gradient"), 3)
    assert tuner.trunk_depth == 1  # dualprompt: E-prompt and edits in block 1; l2p: edits
    batch = make_batch(backbone)
    with torch.no_grad():  # the two passes without the shared trunk
        task = tuner.infer_task(batch)
        expected = tuner.base(batch, task, edits=tuner.edits.choice(task)).logits
    calls, run_block = [], backbone.run_block
    monkeypatch.setattr(
        backbone, "run_block", lambda i, *rest: calls.append(i) or run_block(i, *rest)
    )
    with torch.no_grad():
        out = tuner(batch)
    assert torch.equal(out.task_pred, task)
    torch.testing.assert_close(out.logits, expected)
    assert calls == [0, 1, 1]  # block 0 once; block 1 in the superposed and the final pass


# -- the baselines' edits -------------------------------------------------------------------


def test_wsn_mask_keeps_the_top_share_and_passes_gradients_straight_through():
    scores = torch.arange(1.0, 11.0)
    edit = BinaryMask(scores.view(2, 5).clone(), keep=0.7)
    assert edit.mask().flatten().tolist() == [0, 0, 0] + [1] * 7
    weight = torch.ones(2, 5)
    (edit.weight(weight) * torch.arange(10.0).view(2, 5)).sum().backward()
    torch.testing.assert_close(edit.scores.grad, torch.arange(10.0).view(2, 5))  # STE
    assert BinaryMask(torch.rand(3, 3), keep=1.0).mask().all()


@pytest.mark.parametrize("name", ["lora", "adapter"])
def test_fresh_lora_and_adapters_leave_the_base_method_unchanged(name, backbone):
    tuner = make(name, backbone)
    tuner.begin_task(0, TASKS[0])
    batch = make_batch(backbone)
    task = torch.zeros(4, dtype=torch.long)
    with torch.no_grad():
        edited = tuner(batch, task=task).logits
        plain = tuner.base(batch, task).logits  # no edits: the frozen layers
    torch.testing.assert_close(edited, plain)


@pytest.mark.parametrize("name", ["softtf", "wsn", "lora", "adapter"])
def test_old_edits_do_not_move_and_budgets_are_reported(name, backbone):
    tuner = make(name, backbone)
    tuner.begin_task(0, TASKS[0])
    tuner.begin_task(1, TASKS[1])
    old = {
        n: [p.detach().clone() for p in edits[0].parameters()] for n, edits in tuner.edits.items()
    }
    params = [p for g in tuner.param_groups() for p in g["params"]]
    optimizer = torch.optim.Adam(params, lr=0.05)
    for step in range(2):
        batch = make_batch(backbone, seed=step)
        batch.labels = torch.tensor([3, 4, 5, 3])
        out = tuner.train()(batch, task=torch.ones(4, dtype=torch.long))
        loss = F.cross_entropy(out.logits, batch.labels) + sum(
            tuner.loss_terms(batch, out, 1).values()
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    for n, edits in tuner.edits.items():
        for before, after in zip(old[n], edits[0].parameters(), strict=True):
            assert torch.equal(before, after)
        assert any(p.grad is not None and p.grad.any() for p in edits[1].parameters())
    report = tuner.report()
    one_task = sum(p.numel() for edits in tuner.edits.values() for p in edits[1].parameters())
    assert report["edit_params_per_task"] == one_task
    e_prompt = (2 * 5 + 1) * backbone.dim  # one E-prompt block of length 5, and a key
    assert report["params_per_task"] == one_task + e_prompt


def test_adapters_sit_after_attention_output_and_mlp(backbone):
    tuner = make("adapter", backbone, bottleneck=4)
    assert sorted(tuner.edits) == ["b0_fc2", "b0_proj", "b1_fc2", "b1_proj"]
    tuner.begin_task(0, TASKS[0])
    assert isinstance(tuner.edits["b0_proj"][0].down, nn.Linear)


@pytest.mark.parametrize("shared", [True, False])
def test_superposed_layer_gradients_match_finite_differences(shared):
    from promptcl.tuners.editbank import Superposed

    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 2, 4, dtype=torch.float64, generator=g, requires_grad=True)
    alpha = (
        torch.full((3, 2), 0.5, dtype=torch.float64)
        if shared
        else torch.rand(3, 2, dtype=torch.float64, generator=g)
    )
    alpha.requires_grad_(True)
    stacked = torch.randn(2, 5, 4, dtype=torch.float64, generator=g, requires_grad=True)
    bias = torch.randn(5, dtype=torch.float64, generator=g, requires_grad=True)
    assert torch.autograd.gradcheck(Superposed.apply, (x, alpha, stacked, bias))
    expected = sum(alpha[:, i, None, None] * F.linear(x, stacked[i], bias) for i in range(2))
    torch.testing.assert_close(Superposed.apply(x, alpha, stacked, bias), expected)
