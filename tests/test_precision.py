"""Frozen backbones stored in bf16 under bf16 autocast, trained tensors in fp32
(backbones/precision.py): the weights are bf16 in memory, gradients reach the trained tensors
in fp32, and outputs and gradients stay close to the fp32 run.

Tolerances, from bf16's 8-bit mantissa (relative rounding 2^-9 per op) over 2 blocks: logits
within 3e-2 (they are O(1); observed <= 1e-2), gradients within 5e-2 in relative norm
(observed <= 2.2e-2).
"""

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_inputs, trained_tuner

from promptcl.backbones import Backbone, Prompts, build_backbone
from promptcl.tuners import Batch

pytest.importorskip("lightning_fabric")

from promptcl.backbones.precision import FrozenBF16Precision, store_frozen  # noqa: E402

L2P = {"pool_size": 4, "top_k": 2}
CASES = [  # masks over bf16 weights; prefixes; prompt steps through CLIP's ln_pre
    ("tiny-bert", "softtf", {}),
    ("tiny-vit", "dualprompt", {}),
    ("tiny-clip", "l2p", L2P),
]


def step(tuner, inputs, forward=None, backward=None):
    """Logits (fp32) and the trained tensors' gradients of one training step; ``forward``,
    ``backward``: Fabric's wrapped module and backward."""
    labels = torch.tensor([0, 1, 2, 0])
    batch = Batch(inputs, labels, torch.arange(4), tuner.backbone.features(inputs))
    out = (forward or tuner)(batch, task=torch.zeros_like(labels))
    loss = F.cross_entropy(out.logits.float(), labels) + sum(
        tuner.loss_terms(batch, out, 0).values()
    )
    params = [p for g in tuner.param_groups() for p in g["params"]]
    tuner.zero_grad(set_to_none=True)
    (backward or torch.Tensor.backward)(loss)
    return out.logits.detach().float(), [p.grad for p in params]


def check_close(got, expected):
    logits, grads = got
    torch.testing.assert_close(logits, expected[0], atol=3e-2, rtol=0)
    for grad, want in zip(grads, expected[1], strict=True):
        assert grad.dtype == torch.float32
        assert (grad - want).norm() <= 5e-2 * want.norm() + 1e-6


def check_storage(tuner):
    backbone = tuner.backbone
    assert all(p.dtype == torch.bfloat16 for p in backbone.parameters())
    assert all(b.dtype == torch.bfloat16 for b in backbone.buffers() if b.is_floating_point())
    assert all(p.dtype == torch.float32 for p in tuner.own_parameters())


@pytest.mark.parametrize(("name", "method", "options"), CASES)
def test_bf16_frozen_weights_train_fp32_tensors_close_to_fp32(name, method, options):
    tuner = trained_tuner(name, method, options).train()
    inputs = tiny_inputs(tuner.backbone)
    expected = step(tuner, inputs)
    store_frozen(tuner)
    check_storage(tuner)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = step(tuner, inputs)
    check_close(got, expected)


def test_fabric_plugin_stores_only_the_backbone_in_bf16():
    from lightning_fabric import Fabric

    tuner = trained_tuner("tiny-bert", "softtf", {"mlp": True}).train()
    inputs = tiny_inputs(tuner.backbone)
    expected = step(tuner, inputs)
    fabric = Fabric(accelerator="cpu", devices=1, plugins=FrozenBF16Precision("cpu"))
    wrapped = fabric.setup_module(tuner)
    check_storage(tuner)
    with fabric.autocast():  # the frozen query, as the loop computes it
        got = step(tuner, inputs, forward=wrapped, backward=fabric.backward)
    assert got[0].dtype == torch.float32
    check_close(got, expected)


def test_context_vectors_over_bf16_word_embeddings():
    backbone: Backbone = build_backbone("tiny-bert")
    inputs = tiny_inputs(backbone)
    ctx = torch.randn(3, backbone.dim, requires_grad=True)

    def run():
        hidden, keep = backbone(inputs, Prompts(ctx=ctx))
        pooled = backbone.pool(hidden, keep).float()
        return pooled.detach(), torch.autograd.grad(pooled.square().sum(), ctx)

    expected = run()
    store_frozen(backbone)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = run()
    check_close(got, expected)


@pytest.mark.parametrize("amx", [False, True])
@pytest.mark.parametrize("autocast", [False, True])
@pytest.mark.parametrize("score_bias", [False, True])
def test_cpu_attention_in_bf16_runs_in_fp32_unless_amx(autocast, score_bias, amx, monkeypatch):
    """Attention on the CPU in bf16 (bf16 tensors, or fp32 ones under bf16 autocast) runs
    PyTorch's fp32 kernel, several times faster there than its bf16 one, and returns in the
    input's dtype: exactly fp32 attention over the same inputs, rounded once. With AMX it runs
    PyTorch's bf16 kernel as it is (faster there)."""
    from promptcl.backbones import attention

    monkeypatch.setattr(attention, "cpu_has_amx", lambda: amx)
    torch.manual_seed(0)
    q = torch.randn(2, 3, 7, 8).bfloat16()
    k, v = (torch.randn(2, 3, 11, 8).bfloat16() for _ in range(2))
    mask = torch.ones(2, 1, 1, 11, dtype=torch.bool)
    mask[1, ..., -2:] = False
    if score_bias:  # a float mask: MPNet's or DeBERTa's score bias, -inf where masked
        mask = torch.randn(2, 3, 7, 11).bfloat16().masked_fill(~mask, float("-inf"))
    fp32 = [t.float() for t in (q, k, v)]
    fp32_mask = mask.float() if score_bias else mask
    if amx:  # bf16 attention, under autocast too
        want = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    else:  # fp32 attention, rounded to bf16 for bf16 inputs
        want = F.scaled_dot_product_attention(*fp32, attn_mask=fp32_mask)
        want = want if autocast else want.bfloat16()
    if autocast:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got = attention.attend(*fp32, fp32_mask)
    else:
        got = attention.attend(q, k, v, mask)
    assert got.dtype == want.dtype
    torch.testing.assert_close(got, want, atol=0, rtol=0)


@pytest.mark.parametrize("query_precision", ["same", "bf16"])
def test_query_precision_sets_only_the_frozen_query_pass(query_precision):
    """train.query_precision=bf16: the frozen query (cached, or computed per batch) runs under
    bf16 autocast while training stays fp32; same: in the run's precision (fp32 here)."""
    from promptcl import load_config
    from promptcl.protocols.continual import Experiment

    exp = Experiment(load_config(None, [
        "backbone=tiny-bert", "method=dualprompt", "data.train_per_class=2",
        "train.progress=false", f"train.query_precision={query_precision}",
    ]))  # fmt: skip
    batch = next(exp.batches("test", exp.indices_of("test", [0])[:6], 6))
    with torch.no_grad():
        fp32 = exp.backbone.features(batch.inputs)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf16 = exp.backbone.features(batch.inputs).float()
    want = bf16 if query_precision == "bf16" else fp32
    assert not torch.equal(bf16, fp32)
    assert torch.equal(batch.query, want) and torch.equal(exp.query_features(batch.inputs), want)
    assert all(p.dtype == torch.float32 for p in exp.tuner.parameters())
    with exp.engine.autocast():
        assert not torch.is_autocast_enabled("cpu")
