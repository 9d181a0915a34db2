"""MOS: fresh adapters leave the backbone unchanged, the adapter merge on a hand-worked case,
old adapters frozen after their task, per-sample adapters, the self-refined retrieval on
constructed heads, and the loop calling the merge after every step."""

import json
import math

import pytest
import torch

from promptcl import load_config, run
from promptcl.backbones.hf import tiny_bert
from promptcl.config import build_dataclass
from promptcl.tuners import Batch, TaskData
from promptcl.tuners.mos import MOS, MOSConfig

NUM_CLASSES = 6
TASKS = [[0, 1, 2], [3, 4, 5]]


@pytest.fixture(scope="module")
def backbone():
    return tiny_bert()


def make(backbone, **options):
    torch.manual_seed(0)
    return MOS(build_dataclass(MOSConfig, options, "mos"), backbone, NUM_CLASSES)


def batch_of(backbone, labels, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000, 2000, (len(labels), 6), generator=g)
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    return Batch(inputs, torch.tensor(labels), torch.arange(len(labels)))


def adapter_tensors(tuner, task):
    return [p.detach().clone() for p in tuner.adapters[task].parameters()]


def fill(tuner, task, values):
    """Set every tensor of task ``task``'s adapters to values * (1, 2, 3, ...) (its shape)."""
    with torch.no_grad():
        for p in tuner.adapters[task].parameters():
            p.copy_(values * torch.arange(1, p.numel() + 1.0).view_as(p))


def test_fresh_adapters_leave_the_backbone_unchanged(backbone):
    """AdaptFormer beside every MLP (MOS's defaults: 16 hidden units, scale 0.1), its ``up`` at
    zero: the features of task 0 and of task 1 (a copy of task 0's) are the bare backbone's."""
    tuner = make(backbone).eval()
    for task, classes in enumerate(TASKS):
        tuner.begin_task(task, classes)
    adapter = tuner.adapters[0][0]
    assert (adapter.down.out_features, adapter.scale, adapter.dropout.p) == (16, 0.1, 0.1)
    assert len(tuner.adapters[1]) == backbone.num_blocks
    batch = batch_of(backbone, [0, 3, 4])
    with torch.no_grad():
        hidden, keep = backbone(batch.inputs)
        bare = backbone.pool(hidden, keep)
        for task in range(2):
            torch.testing.assert_close(tuner.features(batch, task), bare, rtol=0, atol=0)


def test_merge_rule_on_a_hand_worked_case(backbone):
    """alpha = 0.5, a = (1, 2, 3, ...) per tensor. Task 0 trained to 2a; task 1 starts as its
    copy, merged: 0.5 * 2a + 0.5 * 2a = 2a; trained to 6a, a step's merge: 0.5 * 6a + 0.5 * 2a
    = 4a. Task 2 starts from 4a, merged with mean(2a, 4a) = 3a: 3.5a; trained to 8a, merged:
    0.5 * 8a + 0.5 * 3a = 5.5a."""
    tuner = make(backbone, adapter_momentum=0.5)
    tuner.begin_task(0, TASKS[0])
    fill(tuner, 0, 2.0)
    tuner.after_step()  # the first task has no older adapter: unchanged
    tuner.begin_task(1, TASKS[1])
    expected = adapter_tensors(tuner, 0)
    for got, want in zip(adapter_tensors(tuner, 1), expected, strict=True):
        torch.testing.assert_close(got, want)
    fill(tuner, 1, 6.0)
    tuner.after_step()
    for got, two_a in zip(adapter_tensors(tuner, 1), expected, strict=True):
        torch.testing.assert_close(got, 2 * two_a)  # 4a
    tuner.begin_task(2, [0])  # a third task (class ids only index the map)
    for got, two_a in zip(adapter_tensors(tuner, 2), expected, strict=True):
        torch.testing.assert_close(got, 1.75 * two_a)  # 3.5a
    fill(tuner, 2, 8.0)
    tuner.after_step()
    for got, two_a in zip(adapter_tensors(tuner, 2), expected, strict=True):
        torch.testing.assert_close(got, 2.75 * two_a)  # 5.5a


def test_old_adapters_never_move_after_their_task(backbone):
    tuner = make(backbone, align={"epochs": 1, "samples_per_class": 4, "batch_size": 8})
    kept = []
    for task, classes in enumerate(TASKS):
        tuner.begin_task(task, classes)
        if task == 1:
            kept = adapter_tensors(tuner, 0)
        groups = tuner.param_groups()
        optimizer = torch.optim.SGD([p for g in groups for p in g["params"]], lr=0.5)
        assert {id(p) for g in groups for p in g["params"]} >= {
            id(p) for p in tuner.adapters[task].parameters()
        }
        tuner.train()
        batch = batch_of(backbone, [classes[0], classes[1], classes[2], classes[0]])
        before = adapter_tensors(tuner, task)
        for _ in range(2):
            out = tuner(batch, task=torch.full_like(batch.labels, task))
            loss = torch.nn.functional.cross_entropy(out.logits, batch.labels)
            loss = loss + sum(tuner.loss_terms(batch, out, task).values())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            tuner.after_step()
        after = adapter_tensors(tuner, task)
        assert any(not torch.equal(a, b) for a, b in zip(before, after, strict=True))
        tuner.eval()
        tuner.end_task(task, classes, TaskData([batch]))
    for got, want in zip(adapter_tensors(tuner, 0), kept, strict=True):
        assert torch.equal(got, want)
    assert all(not p.requires_grad for p in tuner.adapters[0].parameters())


def test_per_sample_adapters_are_each_tasks_own(backbone):
    """Samples of a batch with different tasks get their own task's features, in batch order."""
    tuner = make(backbone).eval()
    for task, classes in enumerate(TASKS):
        tuner.begin_task(task, classes)
    fill(tuner, 1, 0.01)
    batch = batch_of(backbone, [0, 1, 2, 3])
    with torch.no_grad():
        f0, f1 = tuner.features(batch, 0), tuner.features(batch, 1)
        mixed = tuner.features(batch, torch.tensor([1, 0, 1, 0]))
    assert not torch.allclose(f0, f1)
    torch.testing.assert_close(mixed, torch.stack([f1[0], f0[1], f1[2], f0[3]]))


def constructed(backbone, rounds=4, ensemble=False):
    """Two tasks, adapter 1 unlike adapter 0; one sample whose prototype is class 0 (task 0).
    The head names a task-1 class (4) on adapter 0's features and a task-0 class (1) on adapter
    1's: the retrieval alternates 0 -> 1 -> 0 -> 1 ..."""
    tuner = make(backbone, refine_rounds=rounds, ensemble=ensemble).eval()
    for task, classes in enumerate(TASKS):
        tuner.begin_task(task, classes)
    with torch.no_grad():
        for p in tuner.adapters[1][1].parameters():
            p.normal_(generator=torch.Generator().manual_seed(1))
    batch = batch_of(backbone, [0])
    with torch.no_grad():
        f0, f1 = tuner.features(batch, 0)[0], tuner.features(batch, 1)[0]
        tuner.prototypes.normal_(generator=torch.Generator().manual_seed(2))
        tuner.prototypes[0] = f0
        w = (f1 - f0) / (f1 - f0).norm()
        mid = w @ (f0 + f1) / 2
        tuner.head.weight.zero_()
        tuner.head.bias.fill_(-100.0)
        tuner.head.weight[1], tuner.head.bias[1] = 10 * w, -10 * mid
        tuner.head.weight[4], tuner.head.bias[4] = -10 * w, 10 * mid
    return tuner, batch, f0, f1


@pytest.mark.parametrize(("rounds", "adapter"), [(1, 0), (2, 1), (3, 0), (4, 1)])
def test_retrieval_ends_on_the_adapter_of_its_last_round(backbone, rounds, adapter):
    """MOS's loop (MAX_ITER = 4): the logits are the head's on the adapter of the last round."""
    tuner, batch, f0, f1 = constructed(backbone, rounds)
    with torch.no_grad():
        out = tuner(batch)
        want = tuner.head((f0, f1)[adapter])
    assert out.task_pred.tolist() == [adapter]
    torch.testing.assert_close(out.logits[0], want)


def test_retrieval_stops_when_the_head_confirms_the_adapter(backbone):
    """The head names class 4 on either adapter: task 0 -> task 1, confirmed by task 1."""
    tuner, batch, f0, f1 = constructed(backbone, ensemble=True)
    with torch.no_grad():
        tuner.head.weight[1], tuner.head.bias[1] = 0.0, -100.0
        tuner.head.bias[4] = 100.0
        out = tuner(batch)
        cosine = torch.nn.functional.cosine_similarity(f0[None], tuner.prototypes)
        want = tuner.head(f1).softmax(0) + (2 * cosine).softmax(0)  # T = 2 tasks seen
    assert out.task_pred.tolist() == [1]
    torch.testing.assert_close(out.logits[0], want)


def test_the_loop_merges_after_every_step(tmp_path, monkeypatch):
    calls = []
    merge = MOS.after_step
    monkeypatch.setattr(MOS, "after_step", lambda self: calls.append(1) or merge(self))
    config = load_config(
        None,
        ["backbone=tiny-bert", "data.num_tasks=2", "data.train_per_class=2",
         "data.test_per_class=2", "train.epochs=2", "train.batch_size=4", "train.progress=false",
         "method=mos", "tuner.align.epochs=1", "tuner.align.samples_per_class=4"],
    )  # fmt: skip
    run(config, tmp_path / "run")
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    steps = sum(row["epochs"] * math.ceil(row["train_samples"] / 4) for row in log)
    assert steps > 0 and len(calls) == steps
