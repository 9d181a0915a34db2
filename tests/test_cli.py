"""The command line: one-line errors with exit code 2, no traceback, nothing half written."""

import json
import os
import re
import subprocess
import sys

import pytest
import torch

from promptcl.cli import main

SETTINGS = ["method=dualprompt", "backbone=tiny-bert", "data.train_per_class=2", "train.epochs=1",
            "tuner.g_blocks=[0]", "tuner.e_blocks=[1]"]  # fmt: skip
TINY = [arg for setting in SETTINGS for arg in ("--set", setting)]


def promptcl(*args, cwd=None):
    env = {k: v for k, v in os.environ.items() if k != "PROMPTCL_DATA"}
    return subprocess.run(
        [sys.executable, "-m", "promptcl", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=300,
    )


def test_list_names_every_kind():
    result = promptcl("list")
    assert result.returncode == 0
    for name in (
        "dualprompt",
        "l2p",
        "ncm",
        "linear",
        "finetune",
        "minilm-l6",
        "clinc150-15",
        "builtin-intents",
        "text-csv",
    ):
        assert name in result.stdout


def test_list_marks_the_commands_each_benchmark_serves(capsys):
    main(["list"])
    listing = capsys.readouterr().out
    for name, serves in [("clinc150", "run, b2n"), ("clinc150-15", "run"), ("cifar100", "run"),
                         ("banking77", "b2n"), ("coop:NAME", "b2n")]:  # fmt: skip
        assert re.search(rf"^  {re.escape(name)} +\[{serves}\] ", listing, re.M), name


def test_list_shows_the_tii_classifiers_and_heads(capsys):
    main(["list"])
    listing = capsys.readouterr().out
    tii = listing[listing.index("TII classifiers (tuner.tii.classifier") :]
    heads = tii[tii.index("heads at test (tuner.head") :]
    tii = tii[: tii.index("heads at test")]
    for name in ("mlp", "lda", "ncm", "ranpac"):
        assert re.search(rf"^  {name} +\S", tii, re.M), name
    for name in ("linear", "lda", "ranpac"):
        assert re.search(rf"^  {name} +\S", heads, re.M), name


@pytest.mark.parametrize(
    ("command", "benchmark", "message"),
    [
        ("b2n", "clinc150-15", "benchmark clinc150-15 serves promptcl run only; for promptcl b2n"),
        ("run", "banking77", "benchmark banking77 serves promptcl b2n only; for promptcl run"),
    ],
)
def test_a_benchmark_of_the_other_command_is_a_one_line_error(
    tmp_path, capsys, monkeypatch, command, benchmark, message
):
    monkeypatch.delenv("PROMPTCL_DATA", raising=False)
    out = tmp_path / "run"
    args = ["--set", f"benchmark={benchmark}", "--set", "backbone=tiny-bert", "--out", str(out)]
    with pytest.raises(SystemExit) as exit_:
        main([command, *args])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and message in err and "choose one of: " in err
    assert len(err.strip().splitlines()) == 1 and not out.exists()


def test_run_and_resume(tmp_path):
    out = tmp_path / "run"
    result = promptcl("run", *TINY, "--out", out)
    assert result.returncode == 0, result.stderr
    assert "FAA" in result.stdout and (out / "metrics.json").is_file()
    again = promptcl("run", "--resume", out)  # finished: resumes nothing, prints the figures
    assert again.returncode == 0, again.stderr
    assert json.loads((out / "metrics.json").read_text())["method"] == "dualprompt"


def test_bad_input_gives_one_line_and_exit_2(tmp_path):
    """The real entry point; tests/test_bad_input.py runs the whole matrix in-process."""
    out = tmp_path / "run"
    result = promptcl("run", *TINY, "--set", "train.lr=-1", "--out", out, cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines == ["promptcl: error: bad config: train.lr=-1.0 must be a finite number >= 0"]
    assert not out.exists()


OVERFLOW_SETS = ["method=hash", "backbone=tiny-bert", "benchmark=builtin-intents",
                 "data.num_tasks=2", "data.train_per_class=2", "data.test_per_class=1",
                 "train.epochs=1", "train.grad_clip=null", "train.progress=false"]  # fmt: skip


def overflowing_run(out, *settings):
    """`promptcl run` to its end (SystemExit): its exit code."""
    args = [a for s in [*OVERFLOW_SETS, *settings] for a in ("--set", s)]
    with pytest.raises(SystemExit) as stop:
        main(["run", *args, "--out", str(out)])
    return stop.value.code


def test_an_overflowing_update_stops_the_run_as_a_non_finite_loss(tmp_path, capsys, monkeypatch):
    """train.lr=1e38 passes validation; Adam's first update, lr / (1 - beta1), then overflows
    float32 in the optimiser's step itself: one line, exit 2, as at a NaN loss. Later in a run
    (here made to happen in task 2) the last task's checkpoint stays."""
    from promptcl.core.checkpoint import load_checkpoint

    code = overflowing_run(tmp_path / "lr", "train.lr=1e38")
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert "non-finite loss (the optimiser's update overflowed" in err[0]
    assert "task 1/2 epoch 1/1, step 1; lower train.lr" in err[0]
    assert (tmp_path / "lr" / "config.json").is_file()
    assert not (tmp_path / "lr" / "checkpoint").exists()

    real, steps = torch.optim.Adam.step, []

    def overflow_in_task_2(self, *args, **kwargs):  # task 1: 12 classes x 2 samples, one step
        steps.append(1)
        if len(steps) == 2:
            raise RuntimeError("value cannot be converted to type float without overflow")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", overflow_in_task_2)
    code = overflowing_run(tmp_path / "task2")
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "task 2/2 epoch 1/1, step 1" in err[0], err
    assert load_checkpoint(tmp_path / "task2" / "checkpoint")[1].units_done == 1


def test_terminal_output_shows_control_characters_escaped():
    from pathlib import Path

    from promptcl.cli import format_summary, printable

    assert printable("a\nb\x1b[31m\u202e\ud800\x85é\t") == "a\\nb\\x1b[31m\\u202e\\ud800\\x85é\\t"
    m = {"method": "ncm", "benchmark": "text-csv", "backbone": "tiny-bert", "seed": 0,
         "faa": 1.0, "caa": 1.0, "fm": 0.0, "task_id_acc": None, "trainable_params": 0,
         "train_seconds": 0.0}  # fmt: skip
    assert format_summary(m, Path("nl\ndir")).splitlines()[1] == "run directory: nl\\ndir"
