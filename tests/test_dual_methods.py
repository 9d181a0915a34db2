"""What defines kgcoop, cocoop and promptsrc, and a tiny b2n run of each on both encoder kinds."""

import json
import math

import pytest
import torch

from promptcl.backbones.clip import ClipImage, tiny_clip_model
from promptcl.backbones.dual import dual_encoder
from promptcl.backbones.hf import tiny_bert
from promptcl.config import build_dataclass
from promptcl.core.checkpoint import load_checkpoint
from promptcl.dual.context import class_texts
from promptcl.dual.methods import get_method
from promptcl.dual.methods.base import TrainStep
from promptcl.protocols.b2n import load_b2n_config, run_b2n

NAMES = ["freeze account", "pto request", "weather", "book flight"]
TEMPLATE = "a request about {}"
TINY = ["shots=2", "train.epochs=2", "train.progress=false"]
INTENTS = ["book_flight", "pto_request", "freeze_account", "weather", "alarm", "timer"]


@pytest.fixture(scope="module")
def bert_pair():
    return dual_encoder(tiny_bert())


@pytest.fixture(scope="module")
def clip_pair():
    return dual_encoder(ClipImage(*tiny_clip_model(seed=0, text_dim=32, vision_dim=48)))


def build(name, options, encoder):
    method_cls = get_method(name)
    config = build_dataclass(method_cls.config_class, options, name)
    n_ctx, ctx_init = method_cls.text_layout(config)
    label = encoder.label
    texts = class_texts(label.tokenizer, NAMES, TEMPLATE, n_ctx, ctx_init, label.max_length)
    torch.manual_seed(0)
    return method_cls(config, encoder, texts.init_ids), texts


def queries(encoder):
    if encoder.modality == "text":
        utterances = ["please lock my card", "what's the forecast", "i need time off"]
        return dict(encoder.query.tokenizer(utterances, padding=True, return_tensors="pt"))
    return {"pixel_values": torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))}


def train_step(encoder, method, texts, inputs):
    """The TrainStep the b2n loss builds for a batch of queries."""
    q = encoder.encode_queries(inputs, method.query_prompts())
    classes = method.classifier(encoder, texts.inputs())(q)
    return TrainStep(encoder, inputs, q, classes, encoder.scores(q, classes))


def write_clinc(root):
    """A CLINC150-shaped data set of 6 intents (4 train, 2 test each)."""

    def rows(n, word):
        return [[f"{word} {intent.replace('_', ' ')} {i}", intent]
                for intent in INTENTS for i in range(n)]  # fmt: skip

    data = {"train": rows(4, "please"), "val": rows(2, "now"), "test": rows(2, "today")}
    (root / "clinc150").mkdir(parents=True)
    (root / "clinc150" / "data_full.json").write_text(json.dumps(data))
    return root


def tiny_run(tmp_path, kind, method, options=()):
    """A 2-epoch b2n run: tiny-bert on a CLINC150-shaped set, or tiny-clip on random images."""
    if kind == "tiny-bert":
        data = [f"data.root={write_clinc(tmp_path / 'data')}"]
    else:
        data = ["benchmark=random-images"]
    overrides = [*TINY, f"backbone={kind}", f"method={method}", *data, *options]
    metrics = run_b2n(load_b2n_config(None, overrides), tmp_path / "run")
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").open()]
    return metrics, log


# -- kgcoop ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["bert_pair", "clip_pair"])
def test_kgcoop_term_is_zero_at_the_handcrafted_init(kind, request):
    """Context started from the template's own words: the learned class texts are the
    hand-crafted ones, so L_kg = 0; moving the context makes it positive."""
    encoder = request.getfixturevalue(kind)
    method, texts = build("kgcoop", {"n_ctx": 3, "ctx_init": "template"}, encoder)
    method.begin_training(encoder, NAMES, TEMPLATE)
    inputs = queries(encoder)
    with torch.no_grad():
        step = train_step(encoder, method, texts, inputs)
        assert method.loss_terms(step)["kg"].abs().item() < 1e-5
        method.ctx.add_(torch.randn_like(method.ctx))
        moved = train_step(encoder, method, texts, inputs)
        assert method.loss_terms(moved)["kg"].item() > 1e-3
    assert "handcrafted" not in method.state_dict()  # frozen features are not saved


@pytest.mark.parametrize("kind", ["tiny-bert", "tiny-clip"])
def test_kgcoop_b2n_round(tmp_path, kind):
    metrics, log = tiny_run(tmp_path, kind, "kgcoop", ["tuner.n_ctx=2"])
    assert metrics["hm"] is not None and metrics["trainable_params"] > 0
    assert all(set(row["losses"]) == {"ce", "kg"} for row in log)


# -- cocoop ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["bert_pair", "clip_pair"])
def test_cocoop_conditional_token_changes_with_the_query_not_with_the_class(kind, request):
    """Every class text of one query carries that query's context v + h(x); two queries get
    different contexts; encoding one or several queries per pass gives the same features."""
    encoder = request.getfixturevalue(kind)
    method, texts = build("cocoop", {"n_ctx": 3}, encoder)
    inputs = queries(encoder)
    seen, encode = [], encoder.encode_labels

    def spy(tokens, prompts=None):
        seen.append(prompts.ctx.detach().clone())
        return encode(tokens, prompts)

    encoder.encode_labels = spy
    try:
        with torch.no_grad():
            q = encoder.encode_queries(inputs)
            classes = method.classifier(encoder, texts.inputs())(q)
    finally:
        del encoder.encode_labels
    n, c = q.shape[0], len(NAMES)
    assert classes.shape == (n, c, q.shape[1]) and len(seen) == n  # one pass per query
    per_text = torch.cat(seen).view(n, c, 3, -1)
    assert torch.equal(per_text, per_text[:, :1].expand_as(per_text))  # same for every class
    expected = method.ctx.detach() + method.meta_net(q).detach()[:, None]
    assert torch.allclose(per_text[:, 0], expected)
    assert not torch.allclose(per_text[0, 0], per_text[1, 0])  # differs between queries
    assert not torch.allclose(classes[0], classes[1])
    method.config.samples_per_pass = 2
    with torch.no_grad():
        batched = method.classifier(encoder, texts.inputs())(q)
    assert torch.allclose(batched, classes, atol=1e-5)


@pytest.mark.parametrize("kind", ["tiny-bert", "tiny-clip"])
def test_cocoop_b2n_round(tmp_path, kind):
    metrics, log = tiny_run(tmp_path, kind, "cocoop", ["tuner.n_ctx=2"])
    assert metrics["hm"] is not None and metrics["trainable_params"] > 0
    assert all(set(row["losses"]) == {"ce"} for row in log)


# -- promptsrc ------------------------------------------------------------------------------------


def test_promptsrc_aggregation_is_the_gaussian_weighted_mean_of_saved_prompts(bert_pair):
    """Prompts saved after each of 4 epochs, weights N(t; 2.5, 1.5^2) normalised, by hand."""
    method, _ = build("promptsrc", {"n_ctx": 2, "gpa_mean": 2.5, "gpa_std": 1.5}, bert_pair)
    densities = [math.exp(-0.5 * ((t - 2.5) / 1.5) ** 2) for t in (1, 2, 3, 4)]
    weights = [d / sum(densities) for d in densities]
    saved = []
    generator = torch.Generator().manual_seed(0)
    for epoch in range(4):
        with torch.no_grad():  # stands in for an epoch of training
            for p in method.parameters():
                p.copy_(torch.randn(p.shape, generator=generator))
        saved.append({n: p.detach().clone() for n, p in method.named_parameters()})
        method.end_epoch(epoch, 4)
    assert len(saved[0]) == 1 + 1 + 2  # ctx, P_1, V_0, V_1 (tiny-bert: 2 blocks)
    for name, p in method.named_parameters():
        expected = sum(w * s[name].double() for w, s in zip(weights, saved, strict=True))
        torch.testing.assert_close(p.detach().double(), expected, rtol=1e-6, atol=1e-7)
    assert any(k.startswith("gpa_") for k in method.state_dict())  # saved: resume aggregates


def test_promptsrc_terms_vanish_without_prompts_and_regulate_with_them(bert_pair):
    """At empty prompts the model is the frozen one: every term 0; trained prompts move away."""
    method, texts = build("promptsrc", {"n_ctx": 0, "n_ctx_query": 0}, bert_pair)
    method.begin_training(bert_pair, NAMES, TEMPLATE)
    inputs = queries(bert_pair)
    with torch.no_grad():
        terms = method.loss_terms(train_step(bert_pair, method, texts, inputs))
    assert set(terms) == {"scl_image", "scl_text", "scl_logits"}
    assert all(abs(v.item()) < 1e-6 for v in terms.values()), terms
    method, texts = build("promptsrc", {"n_ctx": 2, "templates": [TEMPLATE, "{}"]}, bert_pair)
    method.begin_training(bert_pair, NAMES, TEMPLATE)
    terms = method.loss_terms(train_step(bert_pair, method, texts, inputs))
    assert all(v.item() > 0 for v in terms.values()), terms
    sum(terms.values()).backward()
    assert all(p.grad is not None for p in method.parameters())
    assert not any(p.requires_grad for p in bert_pair.parameters())


@pytest.mark.parametrize("kind", ["tiny-bert", "tiny-clip"])
def test_promptsrc_b2n_round(tmp_path, kind):
    metrics, log = tiny_run(tmp_path, kind, "promptsrc", ["tuner.depth=2", "tuner.gpa_mean=2"])
    assert metrics["hm"] is not None and metrics["trainable_params"] > 0
    assert all(set(row["losses"]) == {"ce", "scl_image", "scl_text", "scl_logits"} for row in log)


def test_promptsrc_resumed_after_an_epoch_equals_the_unbroken_run(tmp_path):
    """The GPA sum is in the checkpoint: a run resumed after epoch 1 of 3 aggregates the same."""
    root = write_clinc(tmp_path / "data")
    overrides = [*TINY, "backbone=tiny-bert", "method=promptsrc", "train.epochs=3",
                 "tuner.gpa_mean=2", f"data.root={root}"]  # fmt: skip
    config = load_b2n_config(None, overrides)
    unbroken = run_b2n(config, tmp_path / "unbroken")
    assert run_b2n(config, tmp_path / "run", stop_after=1) is None
    resumed = run_b2n(config, tmp_path / "run", resume=True)
    assert (resumed["base_acc"], resumed["novel_acc"]) == (
        unbroken["base_acc"],
        unbroken["novel_acc"],
    )
    tensors = [load_checkpoint(tmp_path / run / "checkpoint")[0] for run in ("run", "unbroken")]
    assert all(torch.equal(tensors[0][k], tensors[1][k]) for k in tensors[1])
