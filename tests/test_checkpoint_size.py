"""What a finished run keeps on disk: RanPAC's Gram sums (the ranpac method's, and those of the
HiDe family's ridge TII classifier and head) stay in the checkpoint while a task is left to add
to them, and leave it with the last task; load, predict and eval do without them, and
metrics.json says the checkpoint's size."""

import json

import pytest

import promptcl
from promptcl import load_config, run
from promptcl.core.checkpoint import CHECKPOINT, load_checkpoint
from promptcl.models.continual import evaluate_run

TINY = ["backbone=tiny-bert", "method=ranpac", "tuner.dim=64", "data.num_tasks=2",
        "data.train_per_class=4", "data.test_per_class=3", "train.progress=false"]  # fmt: skip
SUMS = {"classifier.gram", "classifier.target_sum"}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A RanPAC run stopped after its first task and resumed, beside an unbroken one."""
    root = tmp_path_factory.mktemp("ranpac")
    config = load_config(None, TINY)
    unbroken = run(config, root / "unbroken")
    assert run(config, root / "resumed", stop_after=1) is None
    tensors, state = load_checkpoint(root / "resumed" / "checkpoint")
    assert state.units_done == 1 and tensors.keys() >= SUMS  # still resumable
    assert tensors["classifier.gram"].shape == (64, 64)
    resumed = run(config, root / "resumed", resume=True)
    return root, unbroken, resumed


def test_a_finished_ranpac_run_keeps_what_predicting_needs_only(runs):
    root, unbroken, resumed = runs
    timing = ("train_seconds", "eval_seconds", "train_samples_per_s", "checkpoint_bytes")
    assert {k: v for k, v in resumed.items() if k not in timing} == {
        k: v for k, v in unbroken.items() if k not in timing
    }
    for name in ("unbroken", "resumed"):
        path = root / name / "checkpoint" / CHECKPOINT
        tensors, state = load_checkpoint(path.parent)
        assert state.units_done == 2 and not SUMS & tensors.keys()
        assert {"classifier.projection", "classifier.weight", "classifier.ridge"} <= tensors.keys()
        saved = json.loads((root / name / "metrics.json").read_text())
        assert saved["checkpoint_bytes"] == path.stat().st_size


def test_a_finished_ranpac_run_loads_predicts_and_evaluates_as_it_ran(runs):
    root, unbroken, _ = runs
    out = root / "unbroken"
    model = promptcl.load(out)
    assert model.tasks_done == 2
    texts = ["what is my balance", "book a table for two"]
    assert [p.label for p in model.predict(texts)] == [p.label for p in model.predict(texts)]
    figures = evaluate_run(out, [], "cpu")
    assert figures["acc"] == unbroken["acc_matrix"][-1]
    assert figures["union_acc"] == unbroken["union_acc"]
    run(load_config(None, TINY), out, resume=True)  # a finished run resumes to the same end
    again = json.loads((out / "metrics.json").read_text())
    assert again["acc_matrix"] == unbroken["acc_matrix"]


HIDE = ["backbone=tiny-bert", "method=hide", "tuner.tii.classifier=ranpac", "tuner.head=ranpac",
        "tuner.tii.projection_dim=64", "tuner.tii.epochs=1", "tuner.tii.align_epochs=1",
        "tuner.tap.epochs=1", "data.num_tasks=2", "data.train_per_class=4",
        "data.test_per_class=3", "train.epochs=1", "train.progress=false"]  # fmt: skip
HIDE_SUMS = {
    f"stages.{m}.{s}" for m in ("classifier", "second_head") for s in ("gram", "target_sum")
}


def test_the_hide_familys_ridge_sums_leave_a_finished_checkpoint_too(tmp_path):
    """The same ridge as the HiDe family's TII classifier and head: its sums stay while a task
    is left, leave with the last one, and the finished run evaluates as it ran."""
    config = load_config(None, HIDE)
    assert run(config, tmp_path / "run", stop_after=1) is None
    tensors, _ = load_checkpoint(tmp_path / "run" / "checkpoint")
    assert tensors.keys() >= HIDE_SUMS
    figures = run(config, tmp_path / "run", resume=True)
    tensors, state = load_checkpoint(tmp_path / "run" / "checkpoint")
    assert state.units_done == 2 and not HIDE_SUMS & tensors.keys()
    assert {"stages.classifier.weight", "stages.second_head.weight"} <= tensors.keys()
    again = evaluate_run(tmp_path / "run", [], "cpu")
    assert again["acc"] == figures["acc_matrix"][-1]
