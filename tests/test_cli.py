"""The command line: one-line errors with exit code 2, no traceback, nothing half written."""

import json
import os
import subprocess
import sys

import pytest

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


def test_run_and_resume(tmp_path):
    out = tmp_path / "run"
    result = promptcl("run", *TINY, "--out", out)
    assert result.returncode == 0, result.stderr
    assert "FAA" in result.stdout and (out / "metrics.json").is_file()
    again = promptcl("run", "--resume", out)  # finished: resumes nothing, prints the figures
    assert again.returncode == 0, again.stderr
    assert json.loads((out / "metrics.json").read_text())["method"] == "dualprompt"


def write(path, text):
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "args, message",
    [
        (["--set", "method=nope"], "unknown method 'nope'"),
        (["--set", "benchmark=nope"], "unknown benchmark 'nope'"),
        (["--set", "train.epoch=3"], "Key 'epoch' not in 'ContinualTrainConfig'"),
        (["--set", "benchmark=clinc150"], "needs a data root"),
        (["--set", "benchmark=clinc150", "--set", "data.root=/no/such/dir"], "not found"),
        (["--set", "tuner.e_lenght=2"], "e_lenght"),
        (["--set", "train.lr=fast"], "could not be converted"),
        (["--config", "missing.yaml"], "config file missing.yaml not found"),
    ],
)
def test_bad_input_gives_one_line_and_exit_2(tmp_path, args, message):
    out = tmp_path / "run"
    result = promptcl("run", *TINY, *args, "--out", out, cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("promptcl: error:"), result.stderr
    assert message in lines[0] and "Traceback" not in result.stderr
    assert not out.exists()


def test_wrong_data_format_and_foreign_resume(tmp_path):
    (tmp_path / "clinc150").mkdir()
    write(tmp_path / "clinc150" / "domains.json", '{"d": ["a"]}')
    write(tmp_path / "clinc150" / "data_full.json", '{"train": "oops", "test": []}')
    result = promptcl(
        "run",
        *TINY,
        "--set",
        "benchmark=clinc150",
        "--set",
        f"data.root={tmp_path}",
        "--out",
        tmp_path / "r",
    )
    assert result.returncode == 2 and "[text, label] pairs" in result.stderr
    assert not (tmp_path / "r").exists()

    out = tmp_path / "done"
    assert promptcl("run", *TINY, "--out", out).returncode == 0
    before = {p.name: p.stat().st_mtime for p in out.iterdir()}
    result = promptcl("run", "--resume", out, *TINY, "--set", "train.lr=0.9")
    assert result.returncode == 2 and "differs in train.lr" in result.stderr
    assert {p.name: p.stat().st_mtime for p in out.iterdir()} == before
    result = promptcl("run", "--resume", tmp_path / "nothing")
    assert result.returncode == 2 and "not a promptcl run directory" in result.stderr
