import json

import pytest

from promptcl.config import (
    SHIPPED_CONFIGS,
    build_dataclass,
    config_differences,
    resolve_config,
    shipped_configs,
    to_dict,
)
from promptcl.data import BENCHMARKS
from promptcl.errors import UsageError
from promptcl.protocols.continual import load_config, load_run_config
from promptcl.tuners import get_tuner


def test_booleans_parse_as_booleans():
    assert load_config(None, ["train.mask_logits=false"]).train.mask_logits is False
    assert load_config(None, ["train.mask_logits=False"]).train.mask_logits is False
    assert load_config(None, ["train.joint=true"]).train.joint is True


def test_yaml_then_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("method: l2p\ntrain:\n  lr: 0.01\n  epochs: 2\ntuner:\n  top_k: 3\n")
    config = load_config(path, ["train.epochs=7", "seed=4"])
    assert (config.method, config.train.lr, config.train.epochs, config.seed) == ("l2p", 0.01, 7, 4)
    # the method's options, validated and completed with their defaults
    assert config.tuner == {"pool_size": 10, "length": 5, "top_k": 3, "pull_coeff": 0.1,
                            "prompt_init": 1.0}  # fmt: skip


@pytest.mark.parametrize(
    "override", ["train.nope=1", "seed=abc", "train.lr", "datta.root=x", "train.mask_logits=maybe"]
)
def test_bad_keys_and_values_are_usage_errors(override):
    with pytest.raises(UsageError) as err:
        load_config(None, [override])
    assert "\n" not in str(err.value)


def test_data_root_from_environment(monkeypatch):
    monkeypatch.setenv("PROMPTCL_DATA", "/somewhere")
    assert load_config().data.root == "/somewhere"
    assert load_config(None, ["data.root=/else"]).data.root == "/else"


def test_config_differences_ignore_result_free_keys():
    a = to_dict(load_config(None, ["data.root=/a", "train.lr=0.1"]))
    b = to_dict(load_config(None, ["data.root=/b", "train.lr=0.2", "train.accelerator=cpu"]))
    assert config_differences(a, b) == ["train.lr"]


def test_default_experiment_is_hash_on_the_builtin_intents_with_minilm():
    config = load_config()
    assert (config.method, config.benchmark, config.backbone) == (
        "hash",
        "builtin-intents",
        "minilm-l6",
    )


# base-to-novel configs (b2n/ and gpu/b2n/) are checked in test_dual_data.py
CONTINUAL_CONFIGS = sorted(p for p in SHIPPED_CONFIGS.rglob("*.yaml") if "b2n" not in p.parts)


@pytest.mark.parametrize("path", CONTINUAL_CONFIGS, ids=str)
def test_every_shipped_config_is_valid(path):
    config = load_config(path)
    cls = get_tuner(config.method)
    build_dataclass(cls.config_class, config.tuner, config.method)
    assert config.benchmark in BENCHMARKS


HASH_NAMES = ["clinc150/hash", "clinc150/hash.yaml", "configs/clinc150/hash.yaml",
              "./configs/clinc150/hash"]  # fmt: skip


@pytest.mark.parametrize("name", HASH_NAMES)
def test_shipped_configs_resolve_by_name_from_any_directory(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_config(name) == SHIPPED_CONFIGS / "clinc150" / "hash.yaml"
    assert load_config(name).method == "hash"
    assert "clinc150/hash" in shipped_configs() and "b2n/clinc150/mpl" in shipped_configs()


def test_an_existing_file_wins_over_a_shipped_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "configs" / "clinc150").mkdir(parents=True)
    (tmp_path / "configs" / "clinc150" / "hash.yaml").write_text("method: ncm\n")
    assert load_config("configs/clinc150/hash.yaml").method == "ncm"
    assert load_config("clinc150/hash").method == "hash"


def test_an_unknown_config_name_is_one_line_saying_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UsageError) as err:
        load_config("clinc150/nope")
    message = str(err.value)
    assert "\n" not in message and "config file clinc150/nope not found" in message
    assert str(tmp_path / "clinc150" / "nope") in message
    assert str(SHIPPED_CONFIGS / "clinc150" / "nope.yaml") in message


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.lr=-0.1", "train.lr"),
        ("train.lr=nan", "train.lr"),
        ("train.batch_size=0", "train.batch_size"),
        ("train.eval_batch_size=0", "train.eval_batch_size"),
        ("train.epochs=-1", "train.epochs"),
        ("train.grad_clip=0", "train.grad_clip"),
        ("train.optimizer=lion", "train.optimizer"),
        ("train.schedule=linear", "train.schedule"),
        ("train.query_precision=fp8", "train.query_precision"),
        ("data.workers=-1", "data.workers"),
        ("data.max_length=0", "data.max_length"),
        ("data.train_per_class=0", "data.train_per_class"),
        ("data.eval_split=dev", "data.eval_split"),
        ("data.crop_scale=[0.5,0.2]", "data.crop_scale"),
        ("tuner.top_k=0", "top_k"),
        ("method=nope", "unknown method"),
    ],
)
def test_bad_values_fail_at_load_in_one_line(override, message):
    """Every config checks its values when it is built, before a command writes anything."""
    with pytest.raises(UsageError, match=message) as err:
        load_config(None, ["method=l2p", override])
    assert "\n" not in str(err.value)


def test_b2n_shares_the_data_and_training_keys():
    from promptcl.protocols.b2n import load_b2n_config

    config = load_b2n_config(None, ["train.lr=0.01", "data.max_length=32"])
    assert (config.train.optimizer, config.train.schedule, config.train.batch_size) == (
        "sgd", "cosine", 4)  # fmt: skip
    assert config.train.lr == 0.01 and config.data.max_length == 32
    with pytest.raises(UsageError, match="train.lr"):
        load_b2n_config(None, ["train.lr=-1"])
    with pytest.raises(UsageError, match="mask_logits"):  # a continual-only key
        load_b2n_config(None, ["train.mask_logits=false"])


def test_config_files_of_older_versions_name_their_device_in_todays_keys(tmp_path):
    """promptcl 0.1 wrote train.device; resuming such a run maps it to accelerator/devices."""
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"method": "ncm", "train": {"device": "cuda:1"}}))
    config = load_config(path)
    assert (config.train.accelerator, config.train.devices) == ("cuda", [1])
    path.write_text(json.dumps({"method": "ncm", "train": {"device": "auto"}}))
    assert load_config(path).train.accelerator == "auto"


def test_runs_made_before_a_default_changed_keep_the_value_they_were_made_with(tmp_path):
    """hide/hash runs written before tuner.tii.classifier existed trained HiDe's MLP: read as
    a run's config.json they keep it; a user's file without the key gets today's default."""
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"method": "hide", "tuner": {"tii": {"epochs": 20}}}))
    assert load_run_config(path).tuner["tii"]["classifier"] == "mlp"
    assert load_config(path).tuner["tii"]["classifier"] == "lda"
    assert load_run_config(path, ["tuner.tii.classifier=ncm"]).tuner["tii"]["classifier"] == "ncm"
    path.write_text(json.dumps({"method": "hide", "tuner": {"tii": {"classifier": "lda"}}}))
    assert load_run_config(path).tuner["tii"]["classifier"] == "lda"
    path.write_text(json.dumps({"method": "ncm"}))  # no tii at all: nothing filled
    assert load_run_config(path).method == "ncm"
