"""Soft-TransFormers: edited linears over frozen weights and the softtf tuner."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from promptcl.backbones.hf import tiny_bert
from promptcl.backbones.masked import edited_linear
from promptcl.backbones.vit import tiny_vit
from promptcl.config import build_dataclass
from promptcl.errors import UsageError
from promptcl.tuners import Batch
from promptcl.tuners.editbank import TaskEdits, edited_layers
from promptcl.tuners.softtf import SoftTF, SoftTFConfig

NUM_CLASSES = 9
TASKS = [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
BERT_NAMES = ["query", "key", "value", "proj"]


@pytest.fixture(scope="module")
def backbone():
    return tiny_bert()


def make(backbone, **options):
    torch.manual_seed(0)
    config = build_dataclass(SoftTFConfig, options, "softtf")
    return SoftTF(config, backbone, NUM_CLASSES)


def make_batch(backbone, n=4, labels=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000, 2000, (n, 6), generator=g)
    mask = torch.ones_like(ids)
    mask[0, 4:] = 0
    inputs = {"input_ids": ids, "attention_mask": mask}
    labels = torch.tensor(labels if labels is not None else [0, 1, 2, 0][:n])
    return Batch(inputs, labels, torch.arange(n), backbone.features(inputs))


def train_step(tuner, batch, task):
    tuner.train()
    out = tuner(batch, task=torch.full_like(batch.labels, task))
    outside = torch.ones(NUM_CLASSES, dtype=torch.bool)
    outside[TASKS[task]] = False
    loss = F.cross_entropy(out.logits.masked_fill(outside, -1e9), batch.labels)
    loss = loss + sum(tuner.loss_terms(batch, out, task).values())
    tuner.zero_grad(set_to_none=True)
    loss.backward()


def train(tuner, backbone, task, steps=3):
    optimizer = torch.optim.Adam([p for g in tuner.param_groups() for p in g["params"]], lr=0.05)
    labels = TASKS[task] + TASKS[task][:1]
    for step in range(steps):
        train_step(tuner, make_batch(backbone, labels=labels, seed=step), task)
        optimizer.step()


def randomise_masks(tuner, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for edits in tuner.edits.values():
            for e in edits:
                e.mask.copy_(0.5 + torch.rand(e.mask.shape, generator=g))


def subset(batch, rows):
    return Batch(
        {k: v[rows] for k, v in batch.inputs.items()},
        batch.labels[rows],
        batch.index[rows],
        batch.query[rows],
    )


# -- edited linears ------------------------------------------------------------------------------


def test_edited_linear_computes_x_times_masked_weight():
    torch.manual_seed(0)
    base = nn.Linear(5, 7)
    x = torch.randn(3, 4, 5)
    ones = torch.ones(7, 5)
    assert torch.equal(edited_linear(base, x, None), base(x))
    assert torch.equal(edited_linear(base, x, ones), base(x))
    mask = torch.rand(7, 5)
    expected = F.linear(x, base.weight * mask, base.bias)
    torch.testing.assert_close(edited_linear(base, x, mask), expected)


def test_per_sample_masks_equal_each_sample_alone_and_mixing_is_linear():
    torch.manual_seed(0)
    base = nn.Linear(5, 7)

    def layer(x, spec):
        return edited_linear(base, x, spec)

    masks = [torch.rand(7, 5, requires_grad=True) for _ in range(3)]
    x = torch.randn(6, 4, 5)
    task = torch.tensor([2, 0, 1, 0, 2, 2])
    out = layer(x, TaskEdits(masks, task))
    for b, t in enumerate(task.tolist()):
        torch.testing.assert_close(out[b], layer(x[b : b + 1], masks[t])[0])
    one_hot = F.one_hot(task, 3).float()
    torch.testing.assert_close(layer(x, TaskEdits(masks, one_hot)), out)
    # Gradient ID's superposition: d out / d alpha_{b,i} = x_b (W * M_i)^T + b
    alpha = torch.full((6, 3), 1 / 3, requires_grad=True)
    layer(x, TaskEdits(masks, alpha)).sum().backward()
    expected = torch.stack([F.linear(x, base.weight * m.detach(), base.bias) for m in masks], 1)
    torch.testing.assert_close(alpha.grad, expected.sum(dim=(2, 3)))
    out.sum().backward()
    assert all(m.grad is not None and m.grad.any() for m in masks)


def text_inputs(backbone):
    texts = ["set an alarm for seven", "what's the weather like in lisbon tomorrow", "hi"]
    enc = backbone.tokenizer(texts, padding=True, return_tensors="pt")
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}


@pytest.mark.parametrize("name", ["tiny-bert", "tiny-vit"])
def test_edits_reach_every_layer_and_ones_change_nothing(name):
    if name == "tiny-bert":
        backbone = tiny_bert()
        inputs = text_inputs(backbone)
        keep = inputs["attention_mask"].bool()
        with torch.no_grad():
            reference = backbone.model(**inputs).last_hidden_state[keep]
    else:
        backbone = tiny_vit()
        inputs, keep = {"pixel_values": torch.randn(2, 3, 32, 32)}, slice(None)
        with torch.no_grad():
            reference = backbone.model.forward_features(inputs["pixel_values"])

    def run(layers=(), value=1.0):
        edits = {}
        for block, short, layer in layers:
            edits.setdefault(block, {})[short] = torch.full_like(layer.weight, value)
        with torch.no_grad():
            return backbone(inputs, edits=edits)[0][keep]

    layers = edited_layers(backbone, range(backbone.num_blocks), mlp=True)
    assert len(layers) == backbone.num_blocks * (6 if name == "tiny-bert" else 4)
    unmasked = run()
    torch.testing.assert_close(unmasked, reference, atol=1e-6, rtol=0)
    torch.testing.assert_close(run(layers.values()), reference, atol=1e-6, rtol=0)
    for layer in layers.values():  # every edited layer sits on the live path
        assert not torch.equal(run([layer], 0.5), unmasked)


# -- the softtf tuner -----------------------------------------------------------------------------


def test_only_the_current_masks_train_and_old_ones_do_not_move(backbone):
    tuner = make(backbone)
    tuner.begin_task(0, TASKS[0])
    train(tuner, backbone, 0)
    tuner.begin_task(1, TASKS[1])
    old = {n: e[0].mask.detach().clone() for n, e in tuner.edits.items()}
    assert all(len(e) == 2 for e in tuner.edits.values())  # seen tasks only
    trained = {id(p) for g in tuner.param_groups() for p in g["params"]}
    for edits in tuner.edits.values():
        masks = [e.mask for e in edits]
        assert not masks[0].requires_grad and id(masks[0]) not in trained
        assert masks[1].requires_grad and id(masks[1]) in trained
    train_step(tuner, make_batch(backbone, labels=[3, 4, 5, 3]), task=1)
    for edits in tuner.edits.values():
        assert edits[0].mask.grad is None
        assert edits[1].mask.grad is not None and edits[1].mask.grad.any()
    train(tuner, backbone, 1)
    for name, edits in tuner.edits.items():
        torch.testing.assert_close(edits[0].mask, old[name], atol=0, rtol=0)
        assert not torch.equal(
            edits[1].mask, torch.ones_like(edits[1].mask)
        )  # the current task trained


def test_backbone_weights_never_change_and_are_never_copied():
    backbone = tiny_bert()
    before = {n: (p.data_ptr(), p.detach().clone()) for n, p in backbone.named_parameters()}
    tuner = make(backbone, mlp=True)
    for task in range(2):
        tuner.begin_task(task, TASKS[task])
        train(tuner, backbone, task, steps=2)
    weights = [edited.layer.weight for edited in tuner.edits.layers.values()]
    assert len(weights) == 12
    for p in backbone.parameters():
        assert not p.requires_grad and p.grad is None
    after = dict(backbone.named_parameters())
    assert len(after) == len(before)  # same tensors, under the same names
    for p, (ptr, value) in zip(after.values(), before.values(), strict=True):
        assert p.data_ptr() == ptr and torch.equal(p, value)
    # no buffer holds a copy of a frozen weight (the TII's (d, d) sums may share a shape)
    buffers = dict(tuner.named_buffers())
    assert not [n for n, b in buffers.items() for w in weights if torch.equal(b, w)]
    own = {id(p) for p in tuner.own_parameters()}
    assert not own & {id(p) for p in backbone.parameters()}
    state = tuner.trained_state()
    ptrs = {w.data_ptr() for w in weights}
    assert not [k for k, v in state.items() if v.data_ptr() in ptrs or "base_layer" in k]
    masks = sum(v.numel() for k, v in state.items() if k.startswith("edits."))
    assert (
        masks == 2 * sum(w.numel() for w in weights) == 2 * tuner.report()["edit_params_per_task"]
    )


def test_mixed_task_batch_equals_each_sample_alone(backbone):
    tuner = make(backbone, mask_init="uniform", uniform_range=[0.5, 1.5]).eval()
    for task in range(3):
        tuner.begin_task(task, TASKS[task])
    batch = make_batch(backbone)
    task = torch.tensor([2, 0, 1, 0])
    with torch.no_grad():
        mixed = tuner(batch, task=task).logits
        for b in range(4):
            alone = tuner(subset(batch, [b]), task=task[b : b + 1]).logits
            torch.testing.assert_close(mixed[b : b + 1], alone, atol=1e-5, rtol=1e-5)
        assert not torch.allclose(mixed, tuner(batch, task=torch.zeros_like(task)).logits)


@pytest.mark.parametrize("base", ["dualprompt", "l2p"])
def test_prompt_id_picks_each_samples_masks(backbone, base):
    options = {"base": base, "base_options": {"pool_size": 4, "top_k": 2} if base == "l2p" else {}}
    tuner = make(backbone, **options).eval()
    for task in range(2):
        tuner.begin_task(task, TASKS[task])
    randomise_masks(tuner)
    keys = tuner.base.keys if base == "dualprompt" else tuner.task_keys
    d = backbone.dim
    basis = torch.eye(d)
    with torch.no_grad():
        keys[0].copy_(basis[0])
        keys[1].copy_(basis[1])
        if base == "dualprompt":  # same E-prompt for both tasks: only the masks differ
            tuner.base.e_prompts[1].copy_(tuner.base.e_prompts[0])
    batch = make_batch(backbone)
    batch.query = torch.stack([basis[0], basis[1] + 0.1 * basis[2], basis[1], basis[0] - basis[3]])
    with torch.no_grad():
        out = tuner(batch)
        by_task = [tuner(batch, task=torch.full((4,), t)).logits for t in range(2)]
    assert out.task_pred.tolist() == [0, 1, 1, 0]
    for b, t in enumerate([0, 1, 1, 0]):
        torch.testing.assert_close(out.logits[b], by_task[t][b], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(by_task[0], by_task[1], atol=1e-4)  # the masks matter


def test_l2p_base_trains_pool_and_current_task_key(backbone):
    tuner = make(backbone, base="l2p", base_options={"pool_size": 4, "top_k": 2})
    tuner.begin_task(0, TASKS[0])
    tuner.begin_task(1, TASKS[1])
    train_step(tuner, make_batch(backbone, labels=[3, 4, 5, 3]), task=1)
    assert tuner.task_keys[0].grad is None and tuner.task_keys[1].grad.any()
    assert tuner.base.prompts.grad.any()  # L2P's shared pool trains on every task
    report = tuner.report()
    assert report["params_per_task"] == report["edit_params_per_task"] + backbone.dim


def test_defaults_and_bad_options(backbone):
    tuner = make(backbone)
    assert tuner.edit_blocks == [0, 1]  # the last 3 blocks, of a 2-block backbone
    assert sorted(tuner.edits) == [f"b{b}_{n}" for b in (0, 1) for n in sorted(BERT_NAMES)]
    assert make(backbone, blocks=[1], mlp=True).report()["edit_blocks"] == [1]
    with pytest.raises(UsageError, match="mask_init"):
        make(backbone, mask_init="zeros")
    with pytest.raises(UsageError, match="uniform_range"):
        make(backbone, uniform_range=[1.0, 0.5])
    with pytest.raises(UsageError, match="blocks"):
        make(backbone, blocks=[5])
