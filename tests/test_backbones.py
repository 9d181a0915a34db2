"""Wrapped backbones give the original library's outputs when no method is attached."""

import pytest
import torch

from promptcl.backbones import Prefix, PrefixGate, build_backbone
from promptcl.backbones.attention import PrefixAttention
from promptcl.backbones.base import input_prompts
from promptcl.backbones.hf import tiny_bert
from promptcl.backbones.vit import tiny_vit

TEXTS = ["set an alarm for seven", "what's the weather like in lisbon tomorrow", "hi"]


def text_inputs(backbone):
    enc = backbone.tokenizer(TEXTS, padding=True, return_tensors="pt")
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}


def empty_prefixes(backbone, batch):
    empty = torch.zeros(batch, 0, backbone.dim)
    return {i: Prefix(empty, empty) for i in range(backbone.num_blocks)}


def check_text_equivalence(backbone):
    inputs = text_inputs(backbone)
    keep = inputs["attention_mask"].bool()
    with torch.no_grad():
        reference = backbone.model(**inputs).last_hidden_state
        ours, our_keep = backbone(inputs)
        with_empty_prefix, _ = backbone(inputs, prefixes=empty_prefixes(backbone, len(TEXTS)))
    assert torch.equal(our_keep, keep)
    torch.testing.assert_close(ours[keep], reference[keep], atol=1e-5, rtol=0)
    torch.testing.assert_close(with_empty_prefix[keep], reference[keep], atol=1e-5, rtol=0)
    mask = inputs["attention_mask"].unsqueeze(-1).float()
    mean_pooled = (reference * mask).sum(1) / mask.sum(1)
    torch.testing.assert_close(backbone.features(inputs), mean_pooled, atol=1e-5, rtol=0)


def test_tiny_bert_matches_transformers():
    check_text_equivalence(tiny_bert())


@pytest.mark.slow
def test_packaged_minilm_matches_transformers():
    check_text_equivalence(build_backbone("minilm-l6"))


def test_tiny_vit_matches_timm():
    backbone = tiny_vit()
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        reference = backbone.model.forward_features(images)
        pooled = backbone.model.forward_head(reference, pre_logits=True)
        ours, keep = backbone({"pixel_values": images})
        with_empty, _ = backbone({"pixel_values": images}, prefixes=empty_prefixes(backbone, 2))
    assert keep is None
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=0)
    torch.testing.assert_close(with_empty, reference, atol=1e-5, rtol=0)
    torch.testing.assert_close(
        backbone.features({"pixel_values": images}), pooled, atol=1e-5, rtol=0
    )


def naive_prefix_attention(attn: PrefixAttention, x, keep, prefix):
    """Per-head loop with explicit softmax: the reference for the prefix split."""
    q, k, v = attn.project(x)
    H, dh = attn.num_heads, q.shape[-1]
    outs = []
    for h in range(H):
        cols = slice(h * dh, (h + 1) * dh)
        kh = torch.cat([prefix.key[:, :, cols], k[:, h]], dim=1)  # (B, Lp + N, dh)
        vh = torch.cat([prefix.value[:, :, cols], v[:, h]], dim=1)
        scores = q[:, h] @ kh.transpose(1, 2) / dh**0.5  # (B, N, Lp + N)
        allowed = torch.cat([torch.ones_like(keep[:, :1]).expand(-1, prefix.key.shape[1]), keep], 1)
        scores = scores.masked_fill(~allowed[:, None, :], float("-inf"))
        outs.append(scores.softmax(-1) @ vh)
    return attn.output(torch.cat(outs, dim=-1))


@pytest.mark.parametrize("make", [tiny_bert, tiny_vit])
def test_prefix_split_per_head_and_padding(make):
    torch.manual_seed(0)
    backbone = make()
    attn = backbone.attentions[0]
    x = torch.randn(3, 7, backbone.dim)
    keep = torch.tensor([[1] * 7, [1] * 4 + [0] * 3, [1] * 2 + [0] * 5]).bool()
    prefix = Prefix(torch.randn(3, 5, backbone.dim), torch.randn(3, 5, backbone.dim))
    with torch.no_grad():
        ours = attn(x, keep, prefix)
        reference = naive_prefix_attention(attn, x, keep, prefix)
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("autocast", [False, True])
@pytest.mark.parametrize("make", [tiny_bert, tiny_vit])
def test_float64_prefixed_block_equals_reference_attention(make, autocast):
    """No precision rule rounds a float64 computation (bf16 autocast on or off): a prefixed
    block in float64 equals softmax(Q K^T / sqrt(d)) V over the prefix-extended keys and
    values to 1e-12."""
    torch.manual_seed(0)
    backbone = make()
    attn = backbone.attentions[0].double()
    x = torch.randn(3, 7, backbone.dim, dtype=torch.float64)
    keep = torch.tensor([[1] * 7, [1] * 4 + [0] * 3, [1] * 2 + [0] * 5]).bool()
    prefix = Prefix(*(torch.randn(3, 5, backbone.dim, dtype=torch.float64) for _ in range(2)))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        ours = attn(x, keep, prefix)
    with torch.no_grad():
        reference = naive_prefix_attention(attn, x, keep, prefix)
    assert ours.dtype == torch.float64
    torch.testing.assert_close(ours, reference, atol=1e-12, rtol=0)


def test_shared_prefix_broadcasts_over_batch():
    backbone = tiny_bert()
    attn = backbone.attentions[1]
    x = torch.randn(2, 4, backbone.dim)
    pk, pv = torch.randn(3, backbone.dim), torch.randn(3, backbone.dim)
    with torch.no_grad():
        shared = attn(x, None, Prefix(pk, pv))
        batched = attn(x, None, Prefix(pk.expand(2, -1, -1), pv.expand(2, -1, -1)))
    torch.testing.assert_close(shared, batched)


def test_prompts_extend_sequence_and_mask():
    backbone = tiny_bert()
    inputs = text_inputs(backbone)
    prompts = torch.randn(len(TEXTS), 4, backbone.dim)
    with torch.no_grad():
        x, keep = backbone(inputs, input_prompts(prompts))
    assert x.shape[1] == inputs["input_ids"].shape[1] + 4
    assert keep[:, 1:5].all() and torch.equal(keep[:, 5:], inputs["attention_mask"][:, 1:].bool())


def test_backbone_is_frozen_and_stays_in_eval():
    backbone = tiny_bert()
    backbone.train()
    assert not backbone.training and not backbone.model.training
    assert not any(p.requires_grad for p in backbone.parameters())


def test_norga_gate_with_zero_alpha_is_plain_prefix_attention_and_matches_by_hand():
    torch.manual_seed(0)
    attn = tiny_bert().attentions[0]
    x = torch.randn(2, 5, 32)
    keep = torch.tensor([[1] * 5, [1] * 3 + [0] * 2]).bool()
    pk, pv = torch.randn(2, 3, 32), torch.randn(2, 3, 32)
    with torch.no_grad():
        plain = attn(x, keep, Prefix(pk, pv))
        zero = attn(
            x, keep, Prefix(pk, pv, PrefixGate(torch.tensor(2.0), torch.tensor(0.0), torch.tanh))
        )
        gated = attn(
            x, keep, Prefix(pk, pv, PrefixGate(torch.tensor(0.5), torch.tensor(1.5), torch.tanh))
        )
        # by hand: the prefix scores s become s + 1.5 * tanh(0.5 * s)
        q, k, v = attn.project(x)
        pkh, pvh = attn.split_heads(pk, 2), attn.split_heads(pv, 2)
        s_prefix = q @ pkh.transpose(-2, -1) / 8**0.5
        s_prefix = s_prefix + 1.5 * torch.tanh(0.5 * s_prefix)
        scores = torch.cat([s_prefix, q @ k.transpose(-2, -1) / 8**0.5], dim=-1)
        allowed = torch.cat([torch.ones(2, 3, dtype=torch.bool), keep], dim=1)
        scores = scores.masked_fill(~allowed[:, None, None, :], float("-inf"))
        expected = (
            (scores.softmax(-1) @ torch.cat([pvh, v], dim=2)).transpose(1, 2).reshape(2, 5, 32)
        )
    torch.testing.assert_close(zero, plain, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(gated, attn.output(expected), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(gated, plain, atol=1e-3)


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_timm_weights_come_from_a_local_file(tmp_path, suffix):
    """A file of the model with its classifier (a training checkpoint's "model" entry for
    .pth) loads every tensor; refused files are in test_bad_input.py."""
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(1)
    state = {k: v.contiguous() for k, v in timm.create_model("test_vit").state_dict().items()}
    path = tmp_path / f"weights{suffix}"
    if suffix == ".safetensors":
        save_file(state, path)
    else:
        torch.save({"model": state, "epoch": 3}, path)
    loaded = build_backbone("timm:test_vit", str(path)).model.state_dict()
    assert "head.weight" in state and "head.weight" not in loaded
    assert all(torch.equal(loaded[k], state[k]) for k in loaded)
