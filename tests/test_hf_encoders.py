"""Every model type of the encoder table (backbones/hf.py ENCODERS), on tiny random configs
built with transformers' own classes: our block-by-block forward equals transformers'
``last_hidden_state``; prefixes are attended while padding stays masked; edits reach the
linears; load failures are one line naming the model type and the supported ones."""

import io
import json
import sys

import pytest
import torch
import transformers

from promptcl.backbones import Prefix, PrefixGate
from promptcl.backbones.hf import ENCODERS, SUPPORTED, HFEncoder, load_hf_encoder, pretrained
from promptcl.errors import UsageError
from promptcl.tuners.editbank import edited_layers

VOCAB = 100
LENGTHS = [20, 9, 3]  # past MPNet's and DeBERTa's exact buckets, so the log buckets count
COMMON = dict(
    vocab_size=VOCAB,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=64,
    initializer_range=0.3,  # large enough that attention (and its position terms) matter
)
CONFIGS = {
    "bert": lambda: transformers.BertConfig(**COMMON, max_position_embeddings=64),
    "roberta": lambda: transformers.RobertaConfig(
        **COMMON, max_position_embeddings=66, pad_token_id=1
    ),
    "xlm-roberta": lambda: transformers.XLMRobertaConfig(
        **COMMON, max_position_embeddings=66, pad_token_id=1
    ),
    "electra": lambda: transformers.ElectraConfig(  # embeddings_project: 16 -> 32
        **COMMON, embedding_size=16, max_position_embeddings=64
    ),
    "distilbert": lambda: transformers.DistilBertConfig(
        vocab_size=VOCAB,
        dim=32,
        n_layers=2,
        n_heads=4,
        hidden_dim=64,
        max_position_embeddings=64,
        initializer_range=0.3,
    ),
    "mpnet": lambda: transformers.MPNetConfig(
        **COMMON, max_position_embeddings=66, relative_attention_num_buckets=32
    ),
    # DeBERTa-v3's layout: shared key/query projections for positions, log buckets
    "deberta-v2": lambda: transformers.DebertaV2Config(
        **COMMON,
        max_position_embeddings=64,
        relative_attention=True,
        position_buckets=8,
        pos_att_type=["p2c", "c2p"],
        share_att_key=True,
        norm_rel_ebd="layer_norm",
        position_biased_input=False,
        type_vocab_size=0,
    ),
    # DeBERTa-v2's: separate position projections, plain clamped distances
    "deberta-v2-separate": lambda: transformers.DebertaV2Config(
        **COMMON,
        max_position_embeddings=64,
        relative_attention=True,
        max_relative_positions=6,
        pos_att_type=["c2p", "p2c"],
        share_att_key=False,
    ),
}
BIASED = ["mpnet", "deberta-v2", "deberta-v2-separate"]


def test_every_table_entry_has_a_case():
    assert {CONFIGS[name]().model_type for name in CONFIGS} == set(ENCODERS)


def tiny(name: str) -> HFEncoder:
    config = CONFIGS[name]()
    implementation = ENCODERS[config.model_type].attn_implementation
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = transformers.AutoModel.from_config(config, attn_implementation=implementation)
    return HFEncoder(model, tokenizer=None)  # inputs are built as ids


def padded_inputs(encoder: HFEncoder, pad_id: int | None = None) -> dict[str, torch.Tensor]:
    """A batch of random ids of LENGTHS, padded with the model's pad id (or ``pad_id``)."""
    pad = encoder.model.config.pad_token_id if pad_id is None else pad_id
    ids = torch.full((len(LENGTHS), max(LENGTHS)), pad)
    mask = torch.zeros_like(ids)
    g = torch.Generator().manual_seed(1)
    for i, n in enumerate(LENGTHS):
        ids[i, :n] = torch.randint(5, VOCAB, (n,), generator=g)
        mask[i, :n] = 1
    return {"input_ids": ids, "attention_mask": mask}


def random_prefixes(encoder: HFEncoder, length: int = 3) -> dict[int, Prefix]:
    g = torch.Generator().manual_seed(2)
    shape = (len(LENGTHS), length, encoder.dim)
    return {
        i: Prefix(torch.randn(shape, generator=g), torch.randn(shape, generator=g))
        for i in range(encoder.num_blocks)
    }


@pytest.mark.parametrize("name", list(CONFIGS))
def test_matches_transformers_last_hidden_state(name):
    encoder = tiny(name)
    inputs = padded_inputs(encoder)
    keep = inputs["attention_mask"].bool()
    empty = torch.zeros(len(LENGTHS), 0, encoder.dim)
    with torch.no_grad():
        reference = encoder.model(**inputs).last_hidden_state
        ours, our_keep = encoder(inputs)
        with_empty, _ = encoder(inputs, prefixes={0: Prefix(empty, empty)})
    assert torch.equal(our_keep, keep)
    torch.testing.assert_close(ours[keep], reference[keep], atol=1e-5, rtol=0)
    torch.testing.assert_close(with_empty[keep], reference[keep], atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", BIASED)
def test_position_terms_matter(name):
    """The score bias is not vacuous: without it the outputs move far from transformers'."""
    encoder = tiny(name)
    inputs = padded_inputs(encoder)
    keep = inputs["attention_mask"].bool()
    with torch.no_grad():
        reference = encoder.model(**inputs).last_hidden_state
        for attention in encoder.attentions:
            attention.bias.forward = lambda q, k, edits=None: None
        without, _ = encoder(inputs)
    assert (without[keep] - reference[keep]).abs().max() > 0.05


@pytest.mark.parametrize("name", list(CONFIGS))
def test_prefixes_are_attended_and_padding_stays_masked(name):
    encoder = tiny(name)
    inputs = padded_inputs(encoder)
    keep = inputs["attention_mask"].bool()
    other_pads = padded_inputs(encoder, pad_id=4)  # same real tokens, other ids where padded
    prefixes = random_prefixes(encoder)
    with torch.no_grad():
        plain, _ = encoder(inputs)
        prefixed, prefixed_keep = encoder(inputs, prefixes=prefixes)
        repadded, _ = encoder(other_pads, prefixes=prefixes)
    assert torch.equal(prefixed_keep, keep)  # prefixes are keys and values, not tokens
    torch.testing.assert_close(repadded[keep], prefixed[keep], atol=1e-5, rtol=0)
    assert (prefixed[keep] - plain[keep]).abs().max() > 1e-2


def naive_attention(attention, x, keep, prefix):
    """Explicit scores: prefix keys without position terms, real keys with the score bias."""
    q, k, v = attention.project(x)
    B, H, N, dh = q.shape
    scale = attention.scale or dh**-0.5
    pk, pv = attention.split_heads(prefix.key, B), attention.split_heads(prefix.value, B)
    token_scores = q @ k.transpose(-2, -1) * scale
    bias = attention.score_bias(q, k)
    if bias is not None:
        token_scores = token_scores + bias
    scores = torch.cat([q @ pk.transpose(-2, -1) * scale, token_scores], dim=-1)
    allowed = torch.cat([torch.ones(B, pk.shape[2], dtype=torch.bool), keep], dim=1)
    scores = scores.masked_fill(~allowed[:, None, None, :], float("-inf"))
    context = scores.softmax(-1) @ torch.cat([pv, v], dim=2)
    return context.transpose(1, 2).reshape(B, N, H * dh)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_prefix_attention_by_hand(name):
    encoder = tiny(name)
    attention = encoder.attentions[1]
    g = torch.Generator().manual_seed(3)
    x = torch.randn(3, 12, encoder.dim, generator=g)
    keep = torch.tensor([[1] * 12, [1] * 7 + [0] * 5, [1] * 2 + [0] * 10]).bool()
    prefix = Prefix(torch.randn(3, 4, encoder.dim, generator=g), torch.randn(3, 4, encoder.dim))
    zero_gate = PrefixGate(torch.tensor(1.0), torch.tensor(0.0), torch.tanh)
    with torch.no_grad():
        expected = naive_attention(attention, x, keep, prefix)
        ours = attention(x, keep, prefix)
        gated = attention(x, keep, Prefix(prefix.key, prefix.value, zero_gate))  # NoRGa's path
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(gated, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_weight_edits_reach_every_linear(name):
    encoder = tiny(name)
    inputs = padded_inputs(encoder)
    keep = inputs["attention_mask"].bool()
    layers = edited_layers(encoder, range(encoder.num_blocks), mlp=True)
    assert len(layers) == 6 * encoder.num_blocks
    ones = {}
    for edited in layers.values():
        ones.setdefault(edited.block, {})[edited.name] = torch.ones_like(edited.layer.weight)
    with torch.no_grad():
        plain, _ = encoder(inputs)
        unchanged, _ = encoder(inputs, edits=ones)
        for edited in layers.values():
            halved = {edited.block: {edited.name: torch.full_like(edited.layer.weight, 0.5)}}
            moved, _ = encoder(inputs, edits=halved)
            assert (moved[keep] - plain[keep]).abs().max() > 1e-4, (edited.block, edited.name)
    torch.testing.assert_close(unchanged, plain, atol=1e-6, rtol=0)


def test_unsupported_model_type_names_the_supported_ones():
    config = transformers.GPT2Config(n_layer=1, n_embd=32, n_head=4, vocab_size=VOCAB)
    with pytest.raises(UsageError, match="model type 'gpt2' is not supported") as err:
        HFEncoder(transformers.GPT2Model(config), None)
    assert SUPPORTED in str(err.value) and "\n" not in str(err.value)


def test_deberta_with_convolution_is_refused():
    config = CONFIGS["deberta-v2"]()
    config.conv_kernel_size = 3
    with pytest.raises(UsageError, match="deberta-v2 model is not supported: its convolution"):
        HFEncoder(transformers.DebertaV2Model(config), None)


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    """A real WordPiece tokenizer (MiniLM's, 30522 words), saved once."""
    from promptcl.backbones.hf import packaged_model_dir

    path = tmp_path_factory.mktemp("tokenizer")
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(packaged_model_dir("minilm-l6")))
    tokenizer.save_pretrained(path)
    return path, tokenizer.vocab_size


@pytest.mark.parametrize("name", ["mpnet", "deberta-v2", "distilbert"])
def test_saved_model_loads_with_an_attention_it_supports(name, tmp_path, tokenizer_dir):
    """MPNet and DeBERTa-v2 have no SDPA attention in transformers; they load all the same."""
    import shutil

    source, vocab = tokenizer_dir
    config = CONFIGS[name]()
    config.vocab_size = vocab
    transformers.AutoModel.from_config(config).save_pretrained(tmp_path)
    for file in source.iterdir():
        shutil.copy(file, tmp_path)
    encoder = load_hf_encoder(str(tmp_path))
    implementation = ENCODERS[config.model_type].attn_implementation
    assert encoder.model.config._attn_implementation == implementation
    texts = ["set an alarm for seven", "hi"]
    batch = encoder.tokenizer(texts, padding=True, return_tensors="pt")
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    keep = inputs["attention_mask"].bool()
    with torch.no_grad():
        reference = encoder.model(**inputs).last_hidden_state
        ours, _ = encoder(inputs)
    torch.testing.assert_close(ours[keep], reference[keep], atol=1e-5, rtol=0)


def load_error(source) -> str:
    with pytest.raises(UsageError) as err:
        load_hf_encoder(str(source))
    message = str(err.value)
    assert "\n" not in message and f"supported model types: {SUPPORTED}" in message
    return message


def test_load_failures_are_one_line(tmp_path, tokenizer_dir):
    assert "(no such directory)" in load_error(tmp_path / "missing")
    assert "could not load Hugging Face model" in load_error(tmp_path)  # no config.json
    config = CONFIGS["mpnet"]()
    config.save_pretrained(tmp_path)
    assert "Hugging Face mpnet model" in load_error(tmp_path)  # no weights
    transformers.AutoModel.from_config(config).save_pretrained(tmp_path)
    assert "Hugging Face mpnet model" in load_error(tmp_path)  # no tokenizer files
    (tmp_path / "model.safetensors").write_bytes(b"not safetensors")
    assert "Hugging Face mpnet model" in load_error(tmp_path)  # unreadable weights
    transformers.GPT2Config(n_layer=1, n_embd=32, n_head=4).save_pretrained(tmp_path / "gpt2")
    assert "model type 'gpt2' is not supported" in load_error(tmp_path / "gpt2")


def test_model_code_never_runs_and_stdin_is_never_read(tmp_path, monkeypatch):
    """A folder naming custom code is refused before transformers reads it; transformers itself
    is always called with trust_remote_code=False (hub ids are not looked at beforehand), so it
    refuses too, without asking on stdin."""
    marker = tmp_path / "ran"
    (tmp_path / "config.json").write_text(json.dumps({
        "model_type": "evil-bert",
        "auto_map": {"AutoConfig": "evil.EvilConfig", "AutoModel": "evil.EvilModel"},
    }))  # fmt: skip
    (tmp_path / "evil.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    monkeypatch.setattr(sys, "stdin", io.StringIO("y\n" * 3))
    assert "names custom code (auto_map)" in str(pytest.raises(UsageError, load_hf_encoder,
                                                                str(tmp_path)).value)  # fmt: skip
    with pytest.raises(ValueError, match="custom code"):
        pretrained(transformers.AutoConfig, str(tmp_path))
    assert sys.stdin.tell() == 0 and not marker.exists()


def test_loading_shows_no_progress_bar(tmp_path, tokenizer_dir, capfd):
    import shutil

    source, vocab = tokenizer_dir
    config = CONFIGS["bert"]()
    config.vocab_size = vocab
    transformers.AutoModel.from_config(config).save_pretrained(tmp_path)
    for file in source.iterdir():
        shutil.copy(file, tmp_path)
    capfd.readouterr()
    load_hf_encoder(str(tmp_path))
    assert "Loading weights" not in capfd.readouterr().err
    assert transformers.utils.logging.is_progress_bar_enabled()  # as it was before
