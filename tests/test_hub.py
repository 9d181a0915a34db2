"""Runs on the Hugging Face Hub: ``promptcl push`` uploads the files ``load`` reads and a model
card (a recording HfApi stands in for the Hub), and ``load("hf:OWNER/NAME[@REVISION]")`` /
``promptcl predict hf:...`` read them back from huggingface_hub's cache in offline mode (the
pushed files laid out as the cache lays out a download), with a local run's checks."""

import json
from pathlib import Path

import pytest
import yaml
from test_loggers import TINY  # a dualprompt run of the tiny BERT on the built-in intents

import promptcl
from promptcl.cli import main
from promptcl.protocols.continual import load_config, run

huggingface_hub = pytest.importorskip("huggingface_hub")
hub_constants = pytest.importorskip("huggingface_hub.constants")

TEXTS = ["what is the weather tomorrow", "play some jazz", "set an alarm for 7"]
COMMIT, TAGGED = "a" * 40, "b" * 40


class RecordingApi:
    """HfApi's create_repo and create_commit, recording what a push sends."""

    pushed: dict = {}

    def __init__(self, *args, **kwargs):
        pass

    def create_repo(self, repo_id, private=None, exist_ok=False, **kwargs):
        RecordingApi.pushed = {"repo": repo_id, "private": private, "exist_ok": exist_ok}
        return f"https://huggingface.co/{repo_id}"

    def create_commit(self, repo_id, operations, commit_message, **kwargs):
        files = {}
        for op in operations:
            data = op.path_or_fileobj
            files[op.path_in_repo] = data if isinstance(data, bytes) else Path(data).read_bytes()
        RecordingApi.pushed["files"] = files


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    out = tmp_path_factory.mktemp("hub") / "run"
    run(load_config(None, TINY), out)
    return out


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """An offline huggingface_hub whose cache is under ``tmp_path`` (HF_HOME), and the
    recording HfApi."""
    home = tmp_path / "hf"
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # huggingface_hub reads both variables at import: set what it read
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(home / "hub"))
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub, "HfApi", RecordingApi)
    return home / "hub"


def lay_out(cache: Path, repo: str, files: dict, commit: str, ref: str = "main") -> None:
    """``files`` as the cache holds a download of ``repo`` at ``commit``, named by ``ref``."""
    storage = cache / f"models--{repo.replace('/', '--')}"
    for name, data in files.items():
        path = storage / "snapshots" / commit / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    (storage / "refs").mkdir(parents=True, exist_ok=True)
    (storage / "refs" / ref).write_text(commit)


def front_matter(card: str) -> dict:
    head, sep, _ = card.removeprefix("---\n").partition("\n---\n")
    assert card.startswith("---\n") and sep, card[:200]
    return yaml.safe_load(head)


def test_push_then_load_from_the_hub_cache_predicts_as_the_run(finished, hub, capsys):
    main(["push", str(finished), "someone/tiny-dualprompt", "--private"])
    pushed = RecordingApi.pushed
    assert pushed["repo"] == "someone/tiny-dualprompt" and pushed["private"] is True
    files = pushed["files"]
    assert set(files) == {
        "config.json",
        "class_order.json",
        "metrics.json",
        "checkpoint/tuner.safetensors",
        "README.md",
    }
    assert (
        files["checkpoint/tuner.safetensors"]
        == (finished / "checkpoint" / "tuner.safetensors").read_bytes()
    )
    assert "pushed config.json" in capsys.readouterr().out

    card = files["README.md"].decode()
    meta = front_matter(card)
    metrics = json.loads((finished / "metrics.json").read_text())
    assert meta["library_name"] == "promptcl"
    assert meta["datasets"] == ["builtin-intents"] and "dualprompt" in meta["tags"]
    assert "base_model" not in meta  # a random tiny backbone has none
    assert f"| final average accuracy (FAA, %) | {metrics['faa']:.2f} |" in card
    assert "promptcl run --config config.json" in card
    order = json.loads((finished / "class_order.json").read_text())
    assert f"- task 1: {', '.join(order['tasks'][0])}" in card
    assert "licence `apache-2.0`" in card

    lay_out(hub, "someone/tiny-dualprompt", files, COMMIT)
    local = promptcl.load(finished, "cpu").predict(TEXTS)
    remote = promptcl.load("hf:someone/tiny-dualprompt", "cpu")
    assert remote.path == hub / "models--someone--tiny-dualprompt" / "snapshots" / COMMIT
    assert remote.predict(TEXTS) == local

    main(["predict", "hf:someone/tiny-dualprompt", "--device", "cpu", "--text", TEXTS[0]])
    assert local[0].label in capsys.readouterr().out


def test_a_revision_loads_that_commit_and_checks_hold(finished, hub):
    files = {
        name: (finished / name).read_bytes()
        for name in ("config.json", "class_order.json", "metrics.json")
    }
    files["checkpoint/tuner.safetensors"] = (finished / "checkpoint/tuner.safetensors").read_bytes()
    lay_out(hub, "someone/r", files, TAGGED, ref="v1")
    edited = json.loads(files["config.json"])
    edited["seed"] += 1  # config.json no longer fits the checkpoint's fingerprint
    lay_out(hub, "someone/r", {**files, "config.json": json.dumps(edited).encode()}, COMMIT)
    assert promptcl.load("hf:someone/r@v1", "cpu").predict(TEXTS[:1])
    with pytest.raises(promptcl.UsageError, match="config.json or class_order.json changed"):
        promptcl.load("hf:someone/r", "cpu")


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("hf:nobody/missing", "cannot download hf:nobody/missing ("),
        ("hf:no-slash", "is not hf:OWNER/NAME or hf:OWNER/NAME@REVISION"),
        ("hf:someone/x@", "is not hf:OWNER/NAME or hf:OWNER/NAME@REVISION"),
        ("hf:someone/pickles", "holds no promptcl run (no config.json)"),
    ],
)
def test_hub_sources_that_cannot_load_are_one_line_errors(source, message, hub, capsys):
    # a repository of pickles: nothing of it is fetched, so it is no run
    lay_out(hub, "someone/pickles", {"pytorch_model.bin": b"\x80\x04pickle"}, COMMIT)
    with pytest.raises(SystemExit) as err:
        main(["predict", source, "--text", "hello"])
    assert err.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], lines


def test_push_refuses_an_unfinished_run_in_one_line(tmp_path, hub, capsys):
    out = tmp_path / "half"
    assert run(load_config(None, TINY), out, stop_after=1) is None  # 1 of 4 tasks
    RecordingApi.pushed = {}
    with pytest.raises(SystemExit) as err:
        main(["push", str(out), "someone/half"])
    assert err.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == [
        f"promptcl: error: {out} has not finished (no metrics.json); push it once it has, or "
        f"continue it with promptcl run --resume {out}"
    ]
    assert RecordingApi.pushed == {}


def test_a_b2n_image_run_round_trips_with_its_card(tmp_path, hub):
    from promptcl.protocols.b2n import load_b2n_config, run_b2n

    out = tmp_path / "b2n"
    sets = ["backbone=tiny-clip", "benchmark=random-images", "method=coop", "shots=2",
            "train.epochs=1", "train.progress=false"]  # fmt: skip
    metrics = run_b2n(load_b2n_config(None, sets), out)
    promptcl.push(out, "someone/coop")
    files = RecordingApi.pushed["files"]
    assert "class_split.json" in files and "class_order.json" not in files
    card = files["README.md"].decode()
    meta = front_matter(card)
    assert meta["pipeline_tag"] == "image-classification" and "base-to-novel" in meta["tags"]
    assert f"| harmonic mean (HM) | {metrics['hm']:.2f} |" in card
    split = json.loads((out / "class_split.json").read_text())
    assert f"- novel: {', '.join(split['novel'])}" in card
    assert "promptcl b2n --config config.json" in card
    assert "not known to promptcl" in card  # random images carry no licence

    lay_out(hub, "someone/coop", files, COMMIT)
    images = [(out / "b2n.png")]  # any image PIL reads
    local = promptcl.load(out, "cpu").predict(images)
    assert promptcl.load("hf:someone/coop", "cpu").predict(images) == local


def test_base_model_is_the_backbones_hub_original_when_known(tmp_path):
    from promptcl.backbones import hub_model

    assert hub_model("minilm-l6") == "sentence-transformers/all-MiniLM-L6-v2"
    assert hub_model("clip:openai/clip-vit-base-patch16") == "openai/clip-vit-base-patch16"
    (tmp_path / "my" / "bert").mkdir(parents=True)
    local = tmp_path / "my" / "bert"
    assert hub_model(f"hf:{local}") is None  # a local folder has no Hub original
    assert hub_model("tiny-bert") is None and hub_model("timm:vit_base_patch16_224") is None
