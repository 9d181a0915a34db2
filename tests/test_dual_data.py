"""Base-to-novel data, the run_b2n protocol and the `promptcl b2n` command."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from promptcl.cli import main
from promptcl.config import SHIPPED_CONFIGS, build_dataclass
from promptcl.core.checkpoint import load_checkpoint
from promptcl.data import load_labelled, protocols
from promptcl.data.labelled import base_novel, few_shot, readable
from promptcl.dual.methods import get_method
from promptcl.errors import UsageError
from promptcl.protocols.b2n import load_b2n_config, run_b2n

FIXTURES = Path(__file__).parent / "fixtures" / "runs-0.1.0"
TINY = ["backbone=tiny-bert", "shots=2", "train.epochs=2", "train.progress=false"]
INTENTS = ["book_flight", "pto_request", "freeze_account", "weather", "alarm", "timer"]
WORDS = ["please", "can you", "i want to", "help me", "now", "today"]


def write_clinc(root):
    """A CLINC150-shaped data set of 6 intents (4 train, 2 val, 2 test each) plus oos."""

    def rows(n, offset):
        return [[f"{WORDS[(i + offset) % 6]} {intent.replace('_', ' ')} {i}", intent]
                for intent in INTENTS for i in range(n)]  # fmt: skip

    data = {"train": rows(4, 0) + [["blah", "oos"]], "val": rows(2, 1), "test": rows(2, 2)}
    (root / "clinc150").mkdir(parents=True)
    (root / "clinc150" / "data_full.json").write_text(json.dumps(data))
    return root


def write_banking(root):
    folder = root / "banking77"
    folder.mkdir(parents=True)
    for split, n in (("train", 3), ("test", 2)):
        lines = ["text,category"] + [f"my card {c} {i},{c}" for c in ("card_arrival", "top_up")
                                     for i in range(n)]  # fmt: skip
        (folder / f"{split}.csv").write_text("\n".join(lines) + "\n")
    return folder


def write_hwu(root):
    for split, n in (("train", 3), ("test", 2)):
        folder = root / "hwu64" / split
        folder.mkdir(parents=True)
        pairs = [(f"wake me up {i}", "alarm_set") for i in range(n)]
        pairs += [(f"play some jazz {i}", "play_music") for i in range(n)]
        (folder / "seq.in").write_text("\n".join(t for t, _ in pairs) + "\n")
        (folder / "label").write_text("\n".join(y for _, y in pairs) + "\n")
    return root / "hwu64"


@pytest.mark.slow
def test_clinc150_split_is_disjoint_fixed_by_seed_and_readable(data_root):
    data = load_labelled("clinc150", str(data_root), "test", None)
    assert len(data.classnames) == 150 and "pto request" in data.classnames
    assert all("_" not in name for name in data.classnames)
    base, novel = base_novel(data.class_order(0))
    assert len(base) == len(novel) == 75 and not set(base) & set(novel)
    assert (base, novel) == base_novel(data.class_order(0))
    assert base != base_novel(data.class_order(1))[0]
    assert data.template == "a request about {}"


@pytest.mark.slow
def test_k_shots_per_base_class_drawn_with_the_seed(data_root):
    data = load_labelled("clinc150", str(data_root), "test", None)
    base, _ = base_novel(data.class_order(0))
    shots = few_shot(data.train, base, 16, seed=0)
    assert len(shots) == 16 * 75 and {y for _, y in shots} == set(base)
    assert all(sum(y == c for _, y in shots) == 16 for c in base[:5])
    assert shots == few_shot(data.train, base, 16, seed=0)
    assert shots != few_shot(data.train, base, 16, seed=1)
    assert set(shots) <= set(data.train)


def test_few_shot_keeps_every_sample_of_small_classes():
    samples = [("a", 0), ("b", 0), ("c", 1)]
    assert sorted(few_shot(samples, [0, 1], 5, seed=0)) == samples


def test_banking77_and_hwu64_loaders(tmp_path):
    write_banking(tmp_path)
    write_hwu(tmp_path)
    banking = load_labelled("banking77", str(tmp_path), "test", None)
    assert banking.classnames == ["card arrival", "top up"]
    assert len(banking.train) == 6 and len(banking.test) == 4
    hwu = load_labelled("hwu64", str(tmp_path), "test", "the user wants {}")
    assert hwu.classnames == ["alarm set", "play music"] and hwu.template == "the user wants {}"
    assert hwu.train[0] == ("wake me up 0", 0) and hwu.test[-1] == ("play some jazz 1", 1)
    assert readable("iot_hue/light_change") == "iot hue light change"


@pytest.mark.parametrize(
    "setup, name, split, message",
    [
        (lambda r: None, "banking77", "test", "not found"),
        (write_banking, "banking77", "val", "val.csv"),
        (write_hwu, "hwu64", "val", "valid"),
        (write_hwu, "nope", "test", "choose one of"),
        (write_hwu, "coop:pets", "test", "unknown CoOp data set"),
    ],
)
def test_bad_data_is_a_one_line_usage_error(tmp_path, setup, name, split, message):
    setup(tmp_path)
    with pytest.raises(UsageError, match=message) as err:
        load_labelled(name, str(tmp_path), split, None)
    assert "\n" not in str(err.value)


def test_malformed_intent_files_are_usage_errors(tmp_path):
    folder = write_hwu(tmp_path) / "train"
    (folder / "label").write_text("alarm_set\n")
    with pytest.raises(UsageError, match="line by line"):
        load_labelled("hwu64", str(tmp_path), "test", None)
    (tmp_path / "banking77").mkdir()
    (tmp_path / "banking77" / "train.csv").write_text("sentence,intent\nhi,greet\n")
    (tmp_path / "banking77" / "test.csv").write_text("sentence,intent\nhi,greet\n")
    with pytest.raises(UsageError, match="no columns 'text', 'category'"):
        load_labelled("banking77", str(tmp_path), "test", None)


def test_no_data_root_says_how_to_give_one():
    with pytest.raises(UsageError, match="data.root"):
        load_labelled("clinc150", None, "test", None)


def test_tiny_bert_round_with_cross_dataset_transfer(tmp_path):
    root = write_clinc(tmp_path / "data")
    write_banking(root)
    write_hwu(root)
    config = load_b2n_config(None, [*TINY, "method=mpl", f"data.root={root}",
                                    "transfer=[banking77,hwu64]"])  # fmt: skip
    metrics = run_b2n(config, tmp_path / "run")
    assert (metrics["num_base"], metrics["num_novel"]) == (3, 3)
    for key in ("base_acc", "novel_acc", "hm"):
        assert 0.0 <= metrics[key] <= 100.0
    assert set(metrics["transfer"]) == {"banking77", "hwu64"}
    assert metrics["trainable_params"] > 0 and metrics["train_seconds"] > 0
    out = tmp_path / "run"
    for name in ("config.json", "class_split.json", "metrics.json", "log.jsonl", "b2n.png"):
        assert (out / name).is_file(), name
    saved = load_checkpoint(out / "checkpoint")[0]
    trained = {k: v for k, v in saved.items() if not k.startswith("optimizer.")}
    assert sum(t.numel() for t in trained.values()) == metrics["trainable_params"]
    assert json.loads((out / "metrics.json").read_text()) == metrics
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in log] == [0, 1] and log[0]["lr"] == 1e-5
    split = json.loads((out / "class_split.json").read_text())
    assert split["train_samples"] == 6 and not set(split["base"]) & set(split["novel"])
    # the saved prompts, evaluated without training, give the same figures
    again = run_b2n(config, tmp_path / "again", prompts=out)
    assert again["hm"] == metrics["hm"] and again["transfer"] == metrics["transfer"]
    assert again["prompts_from"] and again["final_loss"] is None
    other = load_b2n_config(None, [*TINY, "method=maple", f"data.root={root}"])
    with pytest.raises(UsageError, match="does not hold maple prompts"):
        run_b2n(other, tmp_path / "bad", prompts=out)
    assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize("method, optimizer", [("coop", "sgd"), ("maple", "sgd"), ("coop", "adam")])
def test_a_b2n_run_resumed_after_an_epoch_equals_the_unbroken_run(tmp_path, method, optimizer):
    """The checkpoint after epoch 1 of 3 holds the prompts and the optimiser's state (SGD's
    momentum; Adam's moments and its 0-dim step count): the resumed run gives the unbroken
    run's losses, prompts and figures exactly."""
    root = write_clinc(tmp_path / "data")
    sets = [f"method={method}", "train.epochs=3", f"train.optimizer={optimizer}"]
    config = load_b2n_config(None, [*TINY, *sets, f"data.root={root}"])
    unbroken = run_b2n(config, tmp_path / "unbroken")
    assert run_b2n(config, tmp_path / "run", stop_after=1) is None
    assert load_checkpoint(tmp_path / "run" / "checkpoint")[1].units_done == 1
    resumed = run_b2n(config, tmp_path / "run", resume=True)
    timing = ("train_seconds", "eval_seconds", "checkpoint_bytes")
    assert {k: v for k, v in resumed.items() if k not in timing} == {
        k: v for k, v in unbroken.items() if k not in timing
    }
    losses = [
        [json.loads(line)["losses"] for line in (tmp_path / run / "log.jsonl").open()]
        for run in ("run", "unbroken")
    ]
    assert losses[0] == losses[1] and len(losses[0]) == 3
    tensors = [load_checkpoint(tmp_path / run / "checkpoint")[0] for run in ("run", "unbroken")]
    assert tensors[0].keys() == tensors[1].keys()
    assert all(torch.equal(tensors[0][k], tensors[1][k]) for k in tensors[0])


def test_b2n_resume_refuses_a_continual_run_and_prompts_with_resume(tmp_path):
    run_dir = FIXTURES / "continual"
    with pytest.raises(SystemExit) as stop:
        main(["b2n", "--resume", str(run_dir)])
    assert stop.value.code == 2
    with pytest.raises(SystemExit):
        main(["b2n", "--resume", str(run_dir), "--prompts", str(run_dir)])


def test_tiny_clip_round_on_random_images(tmp_path):
    config = load_b2n_config(None, [*TINY, "backbone=tiny-clip", "benchmark=random-images",
                                    "method=maple", "tuner.depth=2"])  # fmt: skip
    metrics = run_b2n(config, tmp_path / "run")
    assert (metrics["num_base"], metrics["num_novel"]) == (4, 4)
    assert metrics["hm"] is not None and (tmp_path / "run" / "metrics.json").is_file()


def test_usage_errors_write_nothing(tmp_path):
    root = write_clinc(tmp_path / "data")
    out = tmp_path / "run"
    bad = [
        [*TINY, f"data.root={root}", "method=nope"],
        [*TINY, f"data.root={root}", "backbone=tiny-clip"],  # text data, image queries
        [*TINY, f"data.root={root}", "transfer=[banking77]"],  # no banking77 files
        [*TINY, f"data.root={root}", "method=coop", "tuner.n_ctx=9", "tuner.ctx_init=template"],
    ]
    for overrides in bad:
        with pytest.raises(UsageError):
            run_b2n(load_b2n_config(None, overrides), out)
        assert not out.exists()
    out.mkdir()
    (out / "metrics.json").write_text("{}")
    with pytest.raises(UsageError, match="already exists"):
        run_b2n(load_b2n_config(None, [*TINY, f"data.root={root}"]), out)


@pytest.mark.parametrize("override", ["shots=0", "data.eval_split=train", "train.nope=1"])
def test_bad_config_values_are_usage_errors(override):
    with pytest.raises(UsageError) as err:
        load_b2n_config(None, [override])
    assert "\n" not in str(err.value)


B2N_CONFIGS = sorted(SHIPPED_CONFIGS.rglob("b2n/**/*.yaml"))


@pytest.mark.parametrize("path", B2N_CONFIGS, ids=str)
def test_every_shipped_b2n_config_is_valid(path):
    config = load_b2n_config(path)
    build_dataclass(get_method(config.method).config_class, config.tuner, config.method)
    assert config.benchmark.startswith("coop:") or "b2n" in protocols(config.benchmark)


def test_shipped_b2n_configs_exist():
    names = {p.stem for p in B2N_CONFIGS if p.parent.name == "clinc150"}
    assert names >= {"zeroshot", "coop", "ivlp", "maple", "mpl", "kgcoop", "cocoop", "promptsrc"}


def promptcl(*args):
    env = {k: v for k, v in os.environ.items() if k != "PROMPTCL_DATA"}
    return subprocess.run([sys.executable, "-m", "promptcl", *map(str, args)],
                          capture_output=True, text=True, env=env, timeout=300)  # fmt: skip


def test_cli_b2n_writes_metrics(tmp_path):
    root = write_clinc(tmp_path / "data")
    sets = [arg for s in [*TINY, f"data.root={root}", "method=maple"] for arg in ("--set", s)]
    result = promptcl("b2n", *sets, "--out", tmp_path / "run")
    assert result.returncode == 0, result.stderr
    assert "HM" in result.stdout and (tmp_path / "run" / "metrics.json").is_file()


def test_cli_b2n_errors_in_one_line_and_list_names_dual_methods(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("PROMPTCL_DATA", raising=False)
    with pytest.raises(SystemExit) as exit_:
        main(["b2n", "--set", "method=mapel", "--out", str(tmp_path / "bad")])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.startswith("promptcl: error: unknown dual-encoder")
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "bad").exists()
    main(["list"])
    listing = capsys.readouterr().out
    assert all(name in listing for name in ("mpl", "maple", "ivlp", "banking77", "tiny-clip"))
