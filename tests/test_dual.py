"""Dual encoders and their prompt methods: exactness, MPL's carry, couplings, gradients."""

import pytest
import torch
import torch.nn.functional as F

from promptcl.backbones.clip import ClipImage, tiny_clip_model
from promptcl.backbones.dual import TEXT_LOGIT_SCALE, dual_encoder
from promptcl.backbones.hf import HFEncoder, tiny_bert
from promptcl.config import TrainConfig, build_dataclass
from promptcl.dual.context import class_texts
from promptcl.dual.methods import DUAL_METHODS, get_method, register_method
from promptcl.dual.methods.mpl import carried_counts
from promptcl.errors import UsageError
from promptcl.runtime import epoch_lr

NAMES = ["freeze account", "pto request", "weather", "book flight"]
TEMPLATE = "a request about {}"
UTTERANCES = ["please lock my card", "what's the forecast", "i need time off next week"]
# settings with empty prompts: every method must then score exactly as zeroshot
EMPTY = {
    "zeroshot": {},
    "coop": {"n_ctx": 0},
    "ivlp": {"n_ctx": 0, "n_ctx_query": 0},
    "maple": {"n_ctx": 0},
    "mpl": {"n_ctx": 0, "n_rm": 0},
    "kgcoop": {"n_ctx": 0},
    "cocoop": {"n_ctx": 0},
    "promptsrc": {"n_ctx": 0, "n_ctx_query": 0},
}
TRAINED = {
    "coop": {"n_ctx": 3},
    "ivlp": {"n_ctx": 2, "n_ctx_query": 2},
    "maple": {"n_ctx": 2},
    "mpl": {"n_ctx": 1, "n_add": 2, "n_rm": 1},
    "kgcoop": {"n_ctx": 3},
    "cocoop": {"n_ctx": 3, "samples_per_pass": 2},
    "promptsrc": {"n_ctx": 2, "n_ctx_query": 2},
}


def test_every_registered_method_is_in_the_matrix():
    """A new method is added to EMPTY (options that make it the zero-shot model) and, when it
    learns anything, to TRAINED."""
    assert set(EMPTY) == set(DUAL_METHODS)
    assert set(TRAINED) == {n for n in DUAL_METHODS if n != "zeroshot"}


@pytest.fixture(scope="module")
def bert_pair():
    return dual_encoder(tiny_bert())


@pytest.fixture(scope="module")
def clip_model():
    return tiny_clip_model(seed=0, text_dim=32, vision_dim=48)


@pytest.fixture(scope="module")
def clip_pair(clip_model):
    return dual_encoder(ClipImage(*clip_model))


def queries(encoder):
    if encoder.modality == "text":
        return dict(encoder.query.tokenizer(UTTERANCES, padding=True, return_tensors="pt"))
    return {"pixel_values": torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))}


def build(name, options, encoder):
    method_cls = get_method(name)
    config = build_dataclass(method_cls.config_class, options, name)
    n_ctx, ctx_init = method_cls.text_layout(config)
    tokenizer, length = encoder.label.tokenizer, encoder.label.max_length
    texts = class_texts(tokenizer, NAMES, TEMPLATE, n_ctx, ctx_init, length)
    torch.manual_seed(0)
    return method_cls(config, encoder, texts.init_ids), texts


def scores(encoder, method, texts, inputs):
    """As the b2n loss scores: class features from the method's classifier."""
    q = encoder.encode_queries(inputs, method.query_prompts())
    return encoder.scores(q, method.classifier(encoder, texts.inputs())(q))


@pytest.mark.parametrize("kind", ["bert_pair", "clip_pair"])
@pytest.mark.parametrize("name", list(EMPTY))
def test_empty_prompts_reproduce_zeroshot_exactly(name, kind, request):
    encoder = request.getfixturevalue(kind)
    inputs = queries(encoder)
    with torch.no_grad():
        expected = scores(encoder, *build("zeroshot", {}, encoder), inputs)
        got = scores(encoder, *build(name, EMPTY[name], encoder), inputs)
    assert torch.equal(got, expected)


def test_coop_started_from_the_template_words_equals_zeroshot(bert_pair):
    inputs = queries(bert_pair)
    with torch.no_grad():
        expected = scores(bert_pair, *build("zeroshot", {}, bert_pair), inputs)
        method, texts = build("coop", {"n_ctx": 3, "ctx_init": "template"}, bert_pair)
        assert texts.init_ids is not None and len(texts.init_ids) == 3
        assert torch.equal(scores(bert_pair, method, texts, inputs), expected)


def test_text_pair_without_prompts_is_the_plain_encoder(bert_pair):
    inputs = queries(bert_pair)
    backbone = bert_pair.query
    with torch.no_grad():
        plain = F.normalize(backbone.features(inputs), dim=-1)
        assert torch.allclose(bert_pair.encode_queries(inputs), plain, atol=1e-6)
    assert bert_pair.logit_scale == TEXT_LOGIT_SCALE


def test_block_by_block_clip_equals_transformers(clip_model, clip_pair):
    model, tokenizer = clip_model
    text = dict(tokenizer(["a photo of a cat", "the pto request form, please"], padding=True,
                          return_tensors="pt"))  # fmt: skip
    pixels = queries(clip_pair)["pixel_values"]
    with torch.no_grad():
        ref_text = model.get_text_features(**text)
        ref_image = model.get_image_features(pixel_values=pixels)
        ref_text = getattr(ref_text, "pooler_output", ref_text)
        ref_image = getattr(ref_image, "pooler_output", ref_image)
        ours_text = clip_pair.encode_labels(text)
        ours_image = clip_pair.encode_queries({"pixel_values": pixels})
    assert torch.allclose(ours_text, F.normalize(ref_text, dim=-1), atol=1e-5)
    assert torch.allclose(ours_image, F.normalize(ref_image, dim=-1), atol=1e-5)
    assert clip_pair.logit_scale == pytest.approx(float(model.logit_scale.detach().exp()))


def test_carried_counts_by_hand():
    # n_ctx=1, n_add=2, n_rm=1, J=9 on 6 blocks: c_1 = 1, then +2 -1 at every block
    assert carried_counts(1, 2, 1, 9, 6) == [1, 2, 3, 4, 5, 6]
    # n_ctx=2, n_add=3, n_rm=4, J=3 on 5 blocks: 2; max(2-4,0)+6 = 6; 6-4+6 = 8; then unchanged
    assert carried_counts(2, 3, 4, 3, 5) == [2, 6, 8, 8, 8]


def deeper_bert_pair(blocks):
    from transformers import BertConfig, BertModel

    tokenizer = tiny_bert().tokenizer
    sizes = {"hidden_size": 32, "intermediate_size": 64, "max_position_embeddings": 64}
    config = BertConfig(
        vocab_size=tokenizer.vocab_size, num_hidden_layers=blocks, num_attention_heads=4, **sizes
    )
    torch.manual_seed(0)
    return dual_encoder(HFEncoder(BertModel(config, add_pooling_layer=False), tokenizer))


def observed_counts(encoder, method, inputs):
    """Prompt tokens entering each query block, read off the sequence length."""
    lengths, run_block = [], encoder.query.run_block
    base = inputs["input_ids"].shape[1]

    def spy(index, x, *rest):
        lengths.append(x.shape[1] - base)
        return run_block(index, x, *rest)

    encoder.query.run_block = spy
    try:
        with torch.no_grad():
            encoder.encode_queries(inputs, method.query_prompts())
    finally:
        del encoder.query.run_block
    return lengths


@pytest.mark.parametrize(
    "options, expected",
    [
        ({"n_ctx": 1, "n_add": 2, "n_rm": 1, "depth": 9}, [1, 2, 3, 4, 5]),
        ({"n_ctx": 2, "n_add": 3, "n_rm": 4, "depth": 3}, [2, 6, 8, 8, 8]),
    ],
)
def test_mpl_carries_the_counted_tokens_through_the_blocks(options, expected):
    encoder = deeper_bert_pair(5)
    method, _ = build("mpl", options, encoder)
    assert observed_counts(encoder, method, queries(encoder)) == expected
    assert expected == carried_counts(options["n_ctx"], options["n_add"], options["n_rm"],
                                      options["depth"], 5)  # fmt: skip


def test_mpl_keeps_the_oldest_and_drops_the_newest_carried_tokens():
    encoder = deeper_bert_pair(3)
    method, _ = build("mpl", {"n_ctx": 1, "n_add": 2, "n_rm": 1, "depth": 3}, encoder)
    with torch.no_grad():  # tell the two groups apart (they start as clones)
        for coupling in method.groups[0]:
            coupling.bias.add_(1.0)
    seen = {}
    run_block = encoder.query.run_block

    def spy(index, x, *rest):
        seen[index] = x[:, 1:4].clone()
        out = run_block(index, x, *rest)
        seen[f"out{index}"] = out[:, 1:4].clone()
        return out

    encoder.query.run_block = spy
    with torch.no_grad():
        encoder.encode_queries(queries(encoder), method.query_prompts())
        added = method.added()
    del encoder.query.run_block
    # block 1 (0-based): the only carried token is the newest: dropped; two new tokens follow
    assert torch.allclose(seen[1][:, :2], added[1].expand(3, -1, -1))
    # block 2: of the two carried, the newest is dropped, the oldest keeps its block-1 output
    assert torch.equal(seen[2][:, 0], seen["out1"][:, 0])
    assert not torch.allclose(seen[2][:, 0], seen["out1"][:, 1])
    assert torch.allclose(seen[2][:, 1:3], added[2].expand(3, -1, -1))


def test_maple_replaces_and_coupling_shapes(clip_pair):
    method, _ = build("maple", {"n_ctx": 2, "depth": 2}, clip_pair)
    assert method.couple_input.weight.shape == (48, 32)  # text width 32 -> image width 48
    assert [tuple(t.shape) for t in method.coupled()] == [(2, 48), (2, 48)]
    mpl, _ = build("mpl", {"n_ctx": 2, "n_add": 3, "n_rm": 1, "depth": 2}, clip_pair)
    assert [tuple(t.shape) for t in mpl.added()] == [(2, 48), (6, 48)]
    # MaPLe's couplings F_l plus two more groups, one coupling per deep block each
    assert len(mpl.couple) == 1 and [len(group) for group in mpl.groups] == [1, 1]
    assert [tuple(t.shape) for t in mpl.coupled()] == [(2, 48), (2, 48)]  # MaPLe's part
    # every coupling starts from one random init, as in the public code
    assert torch.equal(mpl.couple[0].weight, mpl.groups[1][0].weight)


@pytest.mark.parametrize("kind", ["bert_pair", "clip_pair"])
@pytest.mark.parametrize("name", list(TRAINED))
def test_gradients_reach_only_prompts_and_couplings(name, kind, request):
    encoder = request.getfixturevalue(kind)
    method, texts = build(name, TRAINED[name], encoder)
    logits = scores(encoder, method, texts, queries(encoder))
    F.cross_entropy(logits, torch.tensor([0, 1, 2])).backward()
    assert all(p.grad is None and not p.requires_grad for p in encoder.parameters())
    params = dict(method.named_parameters())
    assert params and all(p.grad is not None for p in params.values()), [
        n for n, p in params.items() if p.grad is None
    ]
    assert method.num_trained_parameters() == sum(p.numel() for p in params.values())


def test_registry_rejects_duplicates_and_unknown_names():
    with pytest.raises(ValueError):
        register_method(DUAL_METHODS["mpl"])
    with pytest.raises(UsageError, match="choose one of"):
        get_method("mapel")


@pytest.mark.parametrize(
    "name, options, message",
    [
        ("mpl", {"n_rm": 3}, "n_add \\* n_ctx \\+ 1"),
        ("maple", {"depth": 0}, "depth"),
        ("coop", {"ctx_init": "words"}, "ctx_init"),
        ("ivlp", {"n_ctx_query": -1}, "n_ctx_query"),
        ("coop", {"bogus": 1}, "bogus"),
    ],
)
def test_bad_method_options_are_one_line_usage_errors(name, options, message):
    with pytest.raises(UsageError, match=message) as err:
        build_dataclass(get_method(name).config_class, options, name)
    assert "\n" not in str(err.value)


def test_template_context_longer_than_the_template_is_a_usage_error(bert_pair):
    tokenizer = bert_pair.label.tokenizer
    with pytest.raises(UsageError, match="ctx_init=random"):
        class_texts(tokenizer, NAMES, TEMPLATE, 5, "template", 64)
    with pytest.raises(UsageError, match="exactly one"):
        class_texts(tokenizer, NAMES, "no slot", 0, "auto", 64)


def test_class_texts_tokenise_like_the_whole_sentence(bert_pair):
    tokenizer = bert_pair.label.tokenizer
    texts = class_texts(tokenizer, NAMES, TEMPLATE, 0, "auto", 64)
    whole = tokenizer([TEMPLATE.format(n) for n in NAMES], padding=True, return_tensors="pt")
    assert torch.equal(texts.input_ids, whole["input_ids"])
    prepend = class_texts(tokenizer, NAMES, TEMPLATE, 2, "prepend-random", 64)
    assert (
        prepend.init_ids is None and prepend.input_ids.shape[1] == whole["input_ids"].shape[1] + 2
    )
    random = class_texts(tokenizer, NAMES, TEMPLATE, 4, "auto", 64)  # 4 > 3 words: CoOp generic
    assert random.init_ids is None and random.input_ids.shape[1] == whole["input_ids"].shape[1] + 1


def test_learning_rate_schedule_and_harmonic_mean():
    from promptcl.metrics import harmonic_mean

    cfg = TrainConfig(epochs=5, lr=0.0035, schedule="cosine", warmup_epochs=1, warmup_lr=1e-5)
    lrs = [epoch_lr(cfg, e) for e in range(5)]
    assert lrs[0] == 1e-5 and lrs[1] == pytest.approx(0.0035)
    assert lrs[2] == pytest.approx(0.0035 * (1 + 0.80901699) / 2)
    assert lrs[1] > lrs[2] > lrs[3] > lrs[4] > 0
    assert harmonic_mean(80.0, 60.0) == pytest.approx(2 * 80 * 60 / 140)
    assert harmonic_mean(0.0, 0.0) == 0.0
    assert epoch_lr(TrainConfig(lr=0.01), 3) == 0.01  # constant: the continual default


def test_clip_directory_is_one_backbone_for_both_commands(tmp_path, clip_model):
    """clip:DIR gives CLIP's image tower as a continual backbone (class token before the
    projection, as transformers pools it) and, in a dual encoder, its text tower beside it."""
    from promptcl.backbones import build_backbone, build_dual_encoder

    model, tokenizer = clip_model
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    backbone = build_backbone(f"clip:{tmp_path}")
    pixels = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ours = backbone.features({"pixel_values": pixels})
        ref = model.vision_model(pixel_values=pixels).pooler_output
    assert backbone.modality == "image" and torch.allclose(ours, ref, atol=1e-5)
    encoder = build_dual_encoder(f"clip:{tmp_path}")
    assert encoder.label.modality == "text" and encoder.query.num_blocks == 2


def test_causal_prefix_attention_lets_every_token_see_the_prefix(clip_pair):
    """CLIP's text attention with a prefix: content keys stay causal and padding-masked, the
    prefix keys are visible from every position (checked against the formula)."""
    from promptcl.backbones import Prefix

    attention = clip_pair.label.attentions[0]
    base = attention.base_layer
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 5, 32, generator=g)
    keep = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], dtype=torch.bool)
    prefix = Prefix(torch.randn(3, 32, generator=g), torch.randn(3, 32, generator=g))
    with torch.no_grad():
        got = attention(x, keep, prefix)
        heads = base.num_heads

        def split(t):  # (B, L, d) -> (B, H, L, dh)
            return t.reshape(t.shape[0], t.shape[1], heads, -1).transpose(1, 2)

        q, k, v = (split(p(x)) for p in (base.q_proj, base.k_proj, base.v_proj))
        pk, pv = (split(t.expand(2, -1, -1)) for t in prefix[:2])
        scores = q @ torch.cat([pk, k], dim=2).transpose(-2, -1) * base.scale  # (B, H, 5, 8)
        allowed = (
            torch.cat(
                [torch.ones(5, 3, dtype=torch.bool), torch.ones(5, 5, dtype=torch.bool).tril()],
                dim=1,
            )[None, None]
            & torch.cat([torch.ones(2, 3, dtype=torch.bool), keep], 1)[:, None, None]
        )
        weights = scores.masked_fill(~allowed, float("-inf")).softmax(-1)
        context = (weights @ torch.cat([pv, v], dim=2)).transpose(1, 2).reshape(2, 5, 32)
        expected = base.out_proj(context)
    assert torch.allclose(got, expected, atol=1e-5)


@pytest.mark.parametrize("n_ctx", [1, 2])
def test_mpl_context_starts_from_the_embedding_of_x(bert_pair, n_ctx):
    # MPL's code: the text "X ... X <template>", context = embeddings of the n_ctx tokens after
    # the start token; with WordPiece (and CLIP's BPE) each "X" is one token
    tokenizer = bert_pair.label.tokenizer
    (x,) = tokenizer("X", add_special_tokens=False)["input_ids"]
    method, texts = build("mpl", {"n_ctx": n_ctx, "n_rm": 1}, bert_pair)
    assert method.config.ctx_init == "prepend" and texts.init_ids == [x] * n_ctx
    expected = bert_pair.label.word_embeddings(torch.tensor([x] * n_ctx))
    torch.testing.assert_close(method.ctx.detach(), expected)
    # the same slots as prepend-random, whose context is drawn from N(0, 0.02)
    random, random_texts = build("mpl", {"n_ctx": n_ctx, "ctx_init": "prepend-random"}, bert_pair)
    assert random_texts.init_ids is None and torch.equal(random_texts.input_ids, texts.input_ids)
    assert not torch.allclose(random.ctx, method.ctx) and random.ctx.std() < 0.05
