"""Hash's mechanics: HDR, HGM, history counts, frozen routers, inference routing."""

import math

import pytest
import torch

from promptcl import load_config
from promptcl.backbones.base import masked_mean
from promptcl.backbones.hf import tiny_bert
from promptcl.config import build_dataclass
from promptcl.errors import UsageError
from promptcl.protocols.continual import Experiment
from promptcl.tuners import Batch, TaskData, get_tuner

FAST = {"tii": {"epochs": 1, "align_epochs": 1}, "tap": {"epochs": 1}}


@pytest.fixture(scope="module")
def backbone():
    return tiny_bert()


def make(backbone, **options):
    cls = get_tuner("hash")
    options = {
        "blocks": [0, 1],
        "num_experts": 4,
        "top_k": 2,
        "num_protected": 1,
        **FAST,
        **options,
    }
    torch.manual_seed(0)
    return cls(build_dataclass(cls.config_class, options, "hash"), backbone, 6)


def batch(backbone, n=5, seed=0, first_class=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000, 2000, (n, 7), generator=g)
    mask = torch.ones_like(ids)
    mask[0, 5:] = 0
    inputs = {"input_ids": ids, "attention_mask": mask}
    labels = first_class + torch.arange(n) % 3
    return Batch(inputs, labels, torch.arange(n), backbone.features(inputs))


def raw_scores(tuner, backbone, b, task):
    """Router scores without HDR, computed by hand for block 0: mean_seq(x) W / sqrt(d)."""
    x, keep = backbone.embed(b.inputs)
    router = tuner.routers[task][0]
    return masked_mean(x, keep) @ router / math.sqrt(backbone.dim), x, keep


def test_hdr_lowers_exactly_the_protected_scores_by_delta(backbone):
    tuner = make(backbone, delta=0.7)
    tuner.begin_task(0, [0, 1, 2])
    tuner.usage[0] = torch.tensor([[5.0, 0, 9, 1], [0, 3, 0, 0]])
    tuner.begin_task(1, [3, 4, 5])
    assert tuner.protected[1].tolist() == [[False, False, True, False], [False, True, False, False]]
    b = batch(backbone)
    task = torch.ones(5, dtype=torch.long)
    raw, x, keep = raw_scores(tuner, backbone, b, 1)
    expected = raw - 0.7 * torch.tensor([0.0, 0, 1, 0])
    chosen, weights = tuner.route(0, x, keep, task)
    top = expected.topk(2, dim=-1)
    assert torch.equal(chosen, top.indices)
    torch.testing.assert_close(weights, top.values.softmax(-1))
    assert tuner.penalty[0].abs().sum() == 0  # task 0 had no history: no penalty


def test_no_hdr_switch_leaves_scores_alone(backbone):
    tuner = make(backbone, hdr=False)
    tuner.begin_task(0, [0, 1, 2])
    tuner.usage[0] = torch.tensor([[5.0, 0, 9, 1], [0, 3, 0, 0]])
    tuner.begin_task(1, [3, 4, 5])
    assert tuner.penalty[1].abs().sum() == 0 and tuner.protected[1].any()


def one_step(tuner, b, task):
    groups = tuner.param_groups()
    optimizer = torch.optim.Adam([{**g, "lr": 0.01 * g.get("lr_scale", 1.0)} for g in groups])
    before = tuner.pool().detach().clone()
    out = tuner(b, task=torch.full_like(b.labels, task))
    out.logits.sum().backward()
    optimizer.step()
    return tuner.pool().detach() - before


def test_hgm_scales_exactly_the_protected_experts_updates_by_beta(backbone):
    deltas = {}
    for mode in ("off", "scale"):
        tuner = make(backbone, hgm=mode, beta=0.25, hdr=False)
        tuner.begin_task(0, [0, 1, 2])
        tuner.usage[0] = torch.tensor([[5.0, 0, 9, 1], [0, 3, 0, 0]])
        tuner.begin_task(1, [3, 4, 5])
        tuner.train()
        deltas[mode] = one_step(tuner, batch(backbone), 1)
    protected = tuner.protected[1]
    assert deltas["off"][protected].abs().sum() > 0, "the protected experts must be routed to"
    torch.testing.assert_close(deltas["scale"][protected], 0.25 * deltas["off"][protected])
    torch.testing.assert_close(deltas["scale"][~protected], deltas["off"][~protected])


def test_hgm_quadratic_penalty(backbone):
    tuner = make(backbone, hgm="quadratic", quadratic_lambda=0.5)
    tuner.begin_task(0, [0, 1, 2])
    tuner.usage[0] = torch.tensor([[2.0, 0, 0, 0], [0, 0, 0, 4]])
    tuner.begin_task(1, [3, 4, 5])
    with torch.no_grad():
        tuner.experts[0].add_(0.1)  # block 0 expert 0: drift^2 = 0.01 per entry
        tuner.experts[7].add_(0.2)  # block 1 expert 3
    n = tuner.experts[0].numel()
    expected = 0.5 * 0.5 * (2 * 0.01 * n + 4 * 0.04 * n)
    b = batch(backbone)
    terms = tuner.loss_terms(b, tuner(b, task=torch.ones_like(b.labels)), 1)
    torch.testing.assert_close(terms["hgm"], torch.tensor(expected), rtol=1e-4, atol=1e-6)


def test_contrast_option_is_hides_term_over_the_stored_class_means(backbone):
    """tuner.contrast_coeff (off by default, the paper): c * CE(M M^T / temp, I), M = [prompted
    feature means of earlier tasks' classes; the batch's prompted features], by hand; its
    gradient reaches the trained tensors of the current task only."""
    assert "contrast" not in make(backbone).loss_terms(None, None, 1)
    tuner = make(backbone, contrast_coeff=0.3, contrast_temperature=0.5).eval()
    tuner.begin_task(0, [0, 1, 2])
    tuner.end_task(0, [0, 1, 2], TaskData([batch(backbone, n=6, seed=s) for s in range(2)]))
    tuner.begin_task(1, [3, 4, 5])
    b = batch(backbone, first_class=3)
    out = tuner(b, task=torch.ones_like(b.labels))
    features = out.extras["features"]
    means = tuner.stages.feature_stats.mean[:3]  # classes of task 0
    M = torch.cat([means, features])
    logits = M @ M.T / 0.5
    by_hand = -logits.log_softmax(dim=1).diagonal().mean()
    terms = tuner.loss_terms(b, out, 1)
    torch.testing.assert_close(terms["contrast"], 0.3 * by_hand)
    tuner.zero_grad(set_to_none=True)
    terms["contrast"].backward()
    assert tuner.routers[0].grad is None and tuner.routers[1].grad.abs().sum() > 0
    assert all(p.grad is None for p in tuner.backbone.parameters())


def test_history_counts_equal_routed_samples(backbone):
    tuner = make(backbone).eval()
    tuner.begin_task(0, [0, 1, 2])
    batches = [batch(backbone, seed=s) for s in range(3)]
    tuner.end_task(0, [0, 1, 2], TaskData(batches))
    counts = torch.zeros(2, 4)
    for b in batches:
        record = {}
        tuner.backbone(b.inputs, prefixes=tuner.prefix_fns(torch.zeros_like(b.labels), record))
        for i, (chosen, _) in record.items():
            counts[i] += torch.bincount(chosen.flatten(), minlength=4)
    assert torch.equal(tuner.usage[0], counts)
    assert tuner.usage[0].sum(-1).tolist() == [15 * 2, 15 * 2]  # samples x top_k per block
    assert torch.equal(tuner.history(), counts)


def tiny_run(*overrides):
    return Experiment(load_config(None, [
        "method=hash", "backbone=tiny-bert", "data.train_per_class=3", "train.epochs=1",
        "train.progress=false", "tuner.blocks=[0,1]", "tuner.num_experts=4",
        "tuner.tii.epochs=1", "tuner.tii.align_epochs=1", "tuner.tap.epochs=1", *overrides,
    ]))  # fmt: skip


def test_old_routers_and_stored_protection_do_not_change():
    exp = tiny_run()
    snapshots = []
    for task in range(3):
        torch.manual_seed(task)
        exp.tuner.begin_task(task, exp.stream.tasks[task])
        exp.train_task(task)
        snapshots.append(
            ([r.detach().clone() for r in exp.tuner.routers], exp.tuner.protected.clone(),
             exp.tuner.penalty.clone())
        )  # fmt: skip
    routers, protected, penalty = snapshots[-1]
    for task, (old_routers, old_protected, old_penalty) in enumerate(snapshots):
        for t in range(task + 1):
            assert torch.equal(routers[t], old_routers[t])
        assert torch.equal(protected[: task + 1], old_protected)
        assert torch.equal(penalty[: task + 1], old_penalty)
    assert not exp.tuner.routers[0].requires_grad and exp.tuner.routers[-1].requires_grad
    assert not torch.equal(snapshots[0][0][0], torch.zeros_like(routers[0]))


def test_inference_routes_as_training_did(backbone):
    tuner = make(backbone).eval()
    for task, classes in enumerate([[0, 1, 2], [3, 4, 5]]):
        tuner.begin_task(task, classes)
        tuner.end_task(
            task, classes, TaskData([batch(backbone, seed=task, first_class=classes[0])])
        )
    b = batch(backbone, seed=7)
    with torch.no_grad():
        inferred = tuner(b)
        given = tuner(b, task=inferred.task_pred)
    torch.testing.assert_close(inferred.logits, given.logits)
    # the stored penalty of the inferred task, not the current one, shapes its routing
    assert tuner.penalty.shape[0] == 2
    for task in (0, 1):
        record_a, record_b = {}, {}
        fixed = torch.full_like(b.labels, task)
        tuner.backbone(b.inputs, prefixes=tuner.prefix_fns(fixed, record_a))
        tuner.backbone(b.inputs, prefixes=tuner.prefix_fns(fixed, record_b))
        assert all(torch.equal(record_a[i][0], record_b[i][0]) for i in record_a)


def test_default_blocks_are_the_first_third(backbone):
    tuner = get_tuner("hash")(get_tuner("hash").config_class(), backbone, 6)
    assert tuner.blocks == [0]  # 2 blocks -> 1; a 12-block ViT gets [0, 1, 2, 3]


def test_share_protection_picks_exactly_the_experts_passing_the_share(backbone):
    history = torch.tensor([[5.0, 0, 9, 1], [0, 3, 0, 0]])
    tuner = make(backbone, protection="share", protect_share=0.3, num_protected=1)
    tuner.begin_task(0, [0, 1, 2])
    assert not tuner.protected[0].any()  # no history yet
    tuner.usage[0] = history
    tuner.begin_task(1, [3, 4, 5])
    # block 0: shares 5/15, 0, 9/15, 1/15 -> experts 0 and 2; block 1: 3/3 -> expert 1
    expected = [[True, False, True, False], [False, True, False, False]]
    assert tuner.protected[1].tolist() == expected
    torch.testing.assert_close(tuner.penalty[1], 0.1 * torch.tensor(expected).float())
    assert tuner.update_scale[torch.tensor(expected)].eq(0.1).all()
    assert tuner.update_scale[~torch.tensor(expected)].eq(1).all()
    with pytest.raises(UsageError, match="protection"):
        make(backbone, protection="nope")
    with pytest.raises(UsageError, match="protect_share"):
        make(backbone, protection="share", protect_share=0.0)


def test_drift_diagnostics_equal_a_hand_computation(backbone):
    tuner = make(backbone).eval()
    moves = {0: 0.1, 5: 0.3}  # experts[i]: block i // 4, expert i % 4
    for task, classes in enumerate([[0, 1, 2], [3, 4, 5]]):
        tuner.begin_task(task, classes)
        with torch.no_grad():
            tuner.experts[list(moves)[task]].add_(moves[list(moves)[task]])
        tuner.end_task(
            task, classes, TaskData([batch(backbone, seed=task, first_class=classes[0])])
        )
    n = tuner.experts[0].numel()
    expected = torch.zeros(2, 2, 4)
    expected[0, 0, 0] = 0.1 * math.sqrt(n)
    expected[1, 1, 1] = 0.3 * math.sqrt(n)
    torch.testing.assert_close(tuner.drift, expected)
    report = tuner.report()
    share = tuner.usage[0] / tuner.usage[0].sum(-1, keepdim=True)  # task 0's routing, (2, 4)
    protected = tuner.protected[1].float()
    assert report["protected_share"][0][0] is None and report["protected_share"][1][1] is None
    hand = (share * protected).sum(-1).mean().item()
    assert report["protected_share"][0][1] == pytest.approx(hand)
    hand = (share * expected[1]).sum(-1).mean().item()
    assert report["routed_drift"][0][1] == pytest.approx(hand)
    assert set(tuner.heatmaps()) >= {"expert_drift_block0", "protected_share"}
