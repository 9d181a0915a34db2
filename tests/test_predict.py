"""A finished run in use: promptcl.load / predict, `promptcl predict` and `promptcl eval`.

Predictions must be the run's own evaluation: predicting a run's test set gives the accuracy
per task and the task-identity accuracy its metrics.json recorded (hash infers the task with
its TII classifier, dualprompt by key matching).
"""

import json
import shutil
from dataclasses import replace

import pytest
import torch
from PIL import Image

import promptcl
from promptcl import Prediction, UsageError, load_config, run
from promptcl.cli import main
from promptcl.core.checkpoint import load_checkpoint, save_checkpoint
from promptcl.data import build_benchmark
from promptcl.files import write_json
from promptcl.models.continual import evaluate_run
from promptcl.protocols.b2n import B2NExperiment, load_b2n_config, run_b2n

FAST = ["train.epochs=1", "train.progress=false", "data.train_per_class=4"]
HASH = ["method=hash", "backbone=tiny-bert", "data.num_tasks=2", "data.test_per_class=3", *FAST,
        "tuner.tii.epochs=1", "tuner.tii.align_epochs=1", "tuner.tap.epochs=1"]  # fmt: skip
INTENTS = ["book_flight", "pto_request", "freeze_account", "weather", "alarm", "timer"]


@pytest.fixture(scope="module")
def text_run(tmp_path_factory):
    """Hash on tiny-bert, the built-in intents in 2 tasks: it infers each sample's task."""
    out = tmp_path_factory.mktemp("text") / "run"
    return out, run(load_config(None, HASH), out)


@pytest.fixture(scope="module")
def image_run(tmp_path_factory, data_root):
    """DualPrompt on tiny-vit, 10 CIFAR-10 classes of JPEG files in 2 tasks."""
    out = tmp_path_factory.mktemp("image") / "run"
    sets = ["method=dualprompt", "backbone=tiny-vit", "benchmark=imagefolder", "data.num_tasks=2",
            f"data.root={data_root / 'cifar10-mini'}", "data.test_per_class=4", *FAST]  # fmt: skip
    return out, run(load_config(None, sets), out)


@pytest.fixture(scope="module")
def b2n_run(tmp_path_factory):
    """CoOp on tiny-bert over a CLINC150-shaped set of 6 intents (3 base, 3 novel)."""
    root = tmp_path_factory.mktemp("b2n")
    rows = {
        split: [[f"{word} {intent.replace('_', ' ')} {i}", intent]
                for intent in INTENTS for i, word in enumerate(["please", "now", "today"][:n])]
        for split, n in (("train", 3), ("test", 2))
    }  # fmt: skip
    (root / "clinc150").mkdir()
    write_json(root / "clinc150" / "data_full.json", rows)
    sets = ["method=coop", "backbone=tiny-bert", "shots=2", "train.epochs=2",
            "train.progress=false", f"data.root={root}"]  # fmt: skip
    config = load_b2n_config(None, sets)
    return root / "run", run_b2n(config, root / "run"), config


def same(a, b):
    """Predictions with equal labels and tasks and scores equal up to float rounding (the
    batches differ)."""
    assert [(p.label, p.task) for p in a] == [(p.label, p.task) for p in b]
    assert [p.score for p in a] == pytest.approx([p.score for p in b], rel=1e-5)
    return True


def own_stream(run_dir):
    """The run's own benchmark, rebuilt from its config (what its evaluation read)."""
    config = load_config(run_dir / "config.json")
    return build_benchmark(config.benchmark, config.data, config.seed)


def accuracies(stream, predictions, num_tasks):
    """Accuracy (%) per task and task-identity accuracy of predictions of stream.test."""
    right = [[0, 0] for _ in range(num_tasks)]
    tasks_right = 0
    for p, y, t in zip(predictions, stream.test.labels, stream.test.tasks, strict=True):
        right[t][0] += p.label == stream.class_names[y]
        right[t][1] += 1
        tasks_right += p.task == t
    return [100.0 * r / n for r, n in right], 100.0 * tasks_right / len(predictions)


def test_text_predictions_are_the_runs_evaluation(text_run):
    out, metrics = text_run
    model = promptcl.load(out)
    order = json.loads((out / "class_order.json").read_text())
    assert model.class_names == order["class_order"] and model.tasks == order["tasks"]
    assert model.modality == "text" and model.tasks_done == 2
    assert model.version == promptcl.__version__ == metrics["promptcl_version"]
    stream = own_stream(out)
    predictions = model.predict(stream.test.items)
    assert all(isinstance(p, Prediction) and p.task in (0, 1) for p in predictions)
    assert all(0 < p.score <= 1 for p in predictions)
    acc, task_acc = accuracies(stream, predictions, 2)
    assert acc == metrics["acc_matrix"][-1]
    assert task_acc == metrics["task_id_acc"]
    # batching does not change a prediction
    small = model.predict(stream.test.items[:7], batch_size=2)
    assert [p.label for p in small] == [p.label for p in predictions[:7]]
    assert model.predict([]) == []
    with pytest.raises(UsageError, match="batch size 0 must be >= 1"):
        model.predict(["x"], batch_size=0)
    with pytest.raises(UsageError, match="not text"):
        model.predict([3])


def test_image_predictions_are_the_runs_evaluation(image_run):
    out, metrics = image_run
    model = promptcl.load(out, device="cpu")
    assert model.modality == "image" and len(model.class_names) == 10
    stream = own_stream(out)
    predictions = model.predict(stream.test.items, batch_size=16)
    acc, task_acc = accuracies(stream, predictions, 2)
    assert acc == metrics["acc_matrix"][-1]
    assert task_acc == metrics["task_id_acc"]
    paths = stream.test.items[:3]
    with Image.open(paths[0]) as a, Image.open(paths[1]) as b:
        pil = model.predict([a.copy(), b.copy(), paths[2]])
    assert same(pil, predictions[:3])


def test_b2n_predicts_over_any_class_names(b2n_run):
    out, metrics, config = b2n_run
    model = promptcl.load(out)
    split = json.loads((out / "class_split.json").read_text())
    assert split["template"] == "a request about {}"
    assert model.class_names == split["base"] + split["novel"] and model.tasks is None
    exp = B2NExperiment(config)
    for half in ("base", "novel"):  # the run's own evaluation: each half over its own classes
        samples = exp.tests[half]
        names = exp.names[half]
        predictions = model.predict([text for text, _ in samples], class_names=names)
        right = sum(p.label == names[y] for p, (_, y) in zip(predictions, samples, strict=True))
        assert 100.0 * right / len(samples) == metrics[f"{half}_acc"]
    unseen = ["order a pizza", "book flight", "reset my password", "weather"]
    predictions = model.predict(["please book flight 0", "now weather 1"], class_names=unseen)
    assert all(p.label in unseen and p.task is None and 0 < p.score <= 1 for p in predictions)
    with pytest.raises(UsageError, match="given twice"):
        model.predict(["x"], class_names=["a", "a"])


def test_cli_predict_prints_a_table_and_writes_json_lines(text_run, tmp_path, capsys):
    out, _ = text_run
    texts = ["set an alarm for seven", "play some jazz"]
    main(["predict", str(out), "--text", texts[0], "--text", texts[1]])
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["input", "label", "score", "task"] and len(table) == 3
    expected = promptcl.load(out).predict(texts + texts)
    lines = tmp_path / "inputs.txt"
    lines.write_text("\n".join(texts) + "\n\n")
    jsonl = tmp_path / "inputs.jsonl"
    jsonl.write_text("".join(json.dumps({"text": t, "id": i}) + "\n" for i, t in enumerate(texts)))
    for given in (lines, jsonl):
        result = tmp_path / "predictions.jsonl"
        main(["predict", str(out), "--text", texts[0], "--text", texts[1], "--input", str(given),
              "--output", str(result), "--batch-size", "3", "--device", "cpu"])  # fmt: skip
        rows = [json.loads(line) for line in result.read_text().splitlines()]
        assert [r["input"] for r in rows] == texts + texts
        assert same([Prediction(r["label"], r["score"], r["task"]) for r in rows], expected)
        assert not list(tmp_path.glob("*.tmp"))


def test_cli_predict_reads_image_paths_and_b2n_class_names(image_run, b2n_run, tmp_path, capsys):
    out, _ = image_run
    paths = own_stream(out).test.items[:2]
    listing = tmp_path / "images.txt"
    listing.write_text("\n".join(paths) + "\n")
    main(["predict", str(out), "--input", str(listing)])
    assert len(capsys.readouterr().out.splitlines()) == 3
    b2n_out, _, _ = b2n_run
    text, choices = "please book flight 0", ["order a pizza", "book flight"]
    expected = promptcl.load(b2n_out).predict([text], class_names=choices)[0]
    names = tmp_path / "names.txt"
    names.write_text("\n".join(choices) + "\n")
    for given in (", ".join(choices), str(names)):
        main(["predict", str(b2n_out), "--text", text, "--class-names", given])
        table = capsys.readouterr().out.splitlines()
        assert table[0].split() == ["input", "label", "score"]
        assert table[1].split() == [*text.split(), *expected.label.split(), f"{expected.score:.4f}"]


def test_the_table_escapes_control_characters(b2n_run, tmp_path, capsys):
    """Class names and inputs holding terminal sequences (OSC, colours) or newlines print as
    escapes, one row per prediction; --output keeps them as they are."""
    b2n_out, _, _ = b2n_run
    text, names = "\x1b[31mred\nalarm", ["\x1b]0;owned\x07title", "wake\u202eup"]
    names_file = tmp_path / "names.txt"
    names_file.write_text("\n".join(names) + "\n")
    main(["predict", str(b2n_out), "--text", text, "--class-names", str(names_file)])
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out and "\u202e" not in out
    table = out.splitlines()
    assert len(table) == 2 and table[1].startswith("\\x1b[31mred\\nalarm  ")
    assert "\\x1b]0;owned\\x07title" in table[1] or "wake\\u202eup" in table[1]
    result = tmp_path / "predictions.jsonl"
    main(["predict", str(b2n_out), "--text", text, "--class-names", str(names_file),
          "--output", str(result)])  # fmt: skip
    row = json.loads(result.read_text())
    assert row["input"] == text and row["label"] in names


def write_csv(path, rows):
    path.write_text("text,label\n" + "".join(f"{t},{y}\n" for t, y in rows))


def test_eval_on_another_test_set_with_the_runs_class_names(text_run, tmp_path, capsys):
    out, metrics = text_run
    main(["eval", str(out), "--output", str(tmp_path / "same.json")])
    same = json.loads((tmp_path / "same.json").read_text())
    assert same["acc"] == metrics["acc_matrix"][-1] and same["union_acc"] == metrics["union_acc"]
    assert same["task_id_acc"] == metrics["task_id_acc"]
    assert "avg acc" in capsys.readouterr().out
    names = promptcl.load(out).class_names
    write_csv(tmp_path / "train.csv", [(f"{n} example", n) for n in names])
    tests = [(f"i need {n.replace('_', ' ')} {i}", n) for n in names for i in range(2)]
    write_csv(tmp_path / "test.csv", tests)
    sets = ["benchmark=text-csv", f"data.train_file={tmp_path / 'train.csv'}",
            f"data.test_file={tmp_path / 'test.csv'}", "data.test_per_class=null"]  # fmt: skip
    main(["eval", str(out), *[a for s in sets for a in ("--set", s)]])
    printed = capsys.readouterr().out
    predictions = promptcl.load(out).predict([t for t, _ in tests])
    union = 100.0 * sum(p.label == y for p, (_, y) in zip(predictions, tests, strict=True))
    assert f"union acc {union / len(tests):.2f}" in printed and "48 samples of 2 tasks" in printed
    other = [(f"{n} example", n) for n in names[1:]] + [("a cat", "pet_the_cat")]
    write_csv(tmp_path / "other-train.csv", other)
    write_csv(tmp_path / "other-test.csv", other)
    sets[1:3] = [f"data.train_file={tmp_path / 'other-train.csv'}",
                 f"data.test_file={tmp_path / 'other-test.csv'}"]  # fmt: skip
    with pytest.raises(UsageError, match="do not match the run's") as err:
        evaluate_run(out, sets)
    assert "not in the run: 'pet_the_cat'" in str(err.value)
    assert f"missing: {names[0]!r}" in str(err.value)


def test_a_run_without_a_finished_task_is_refused(tmp_path):
    out = tmp_path / "run"
    assert run(load_config(None, HASH), out, stop_after=0) is None
    with pytest.raises(UsageError, match="has not finished a task yet") as err:
        promptcl.load(out)
    assert "\n" not in str(err.value)


def test_an_interrupted_run_predicts_among_its_finished_tasks_unless_it_leaks(tmp_path):
    """Loaded at its last task boundary (1 of 2 tasks); a per-batch task inference (Soft-TF's
    gradient-batch, evaluated on task-pure batches) cannot predict new inputs."""
    sets = ["method=softtf", "tuner.task_id=gradient-batch", "backbone=tiny-bert",
            "data.num_tasks=2", *FAST, "train.epochs=0"]  # fmt: skip
    out = tmp_path / "run"
    assert run(load_config(None, sets), out, stop_after=1) is None
    model = promptcl.load(out)
    assert model.tasks_done == 1 and len(model.tasks) == 2
    with pytest.raises(UsageError, match="leaks task identity"):
        model.predict(["set an alarm"])


def rewrite_checkpoint(run_dir, change_tensors=None, change_state=None):
    tensors, state = load_checkpoint(run_dir / "checkpoint")
    tensors = change_tensors(tensors) if change_tensors else tensors
    state = change_state(state) if change_state else state
    save_checkpoint(run_dir / "checkpoint", tensors, state)  # a valid, checksummed file


def test_tensors_that_do_not_fit_the_rebuilt_tuner_are_refused(text_run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(text_run[0], copy)

    def grow(tensors):  # one tensor twice as long, as from a run with other options
        name = sorted(tensors)[0]
        return {**tensors, name: torch.cat([tensors[name], tensors[name]])}

    rewrite_checkpoint(copy, grow)
    with pytest.raises(UsageError, match="does not fit hash as the config builds it") as err:
        promptcl.load(copy)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("version", [None, "0.0.1"])
def test_a_run_of_an_older_version_loads_while_its_tensors_fit(text_run, tmp_path, version):
    copy = tmp_path / "run"
    shutil.copytree(text_run[0], copy)

    rewrite_checkpoint(copy, change_state=lambda state: replace(state, promptcl_version=version))
    metrics = json.loads((copy / "metrics.json").read_text())
    write_json(copy / "metrics.json", {k: v for k, v in metrics.items() if "version" not in k})
    model = promptcl.load(copy)
    assert model.version == version
    texts = ["set an alarm", "what is the weather like"]
    assert model.predict(texts) == promptcl.load(text_run[0]).predict(texts)
