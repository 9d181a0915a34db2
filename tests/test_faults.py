"""Crashes, kills, non-finite losses and concurrent runs: a resumed run equals the unbroken one
exactly, or resume refuses in one line; run directories hold strict JSON only."""

import errno
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors import SafetensorError, safe_open

import promptcl.core.checkpoint as checkpoint
import promptcl.core.rundir as rundir
import promptcl.protocols.continual as continual
from promptcl import load_config, run
from promptcl.cli import main
from promptcl.core.checkpoint import load_checkpoint
from promptcl.tuners import TUNERS

TIMING = ("train_seconds", "eval_seconds", "train_samples_per_s", "checkpoint_bytes")
TINY = ["backbone=tiny-bert", "data.num_tasks=2", "data.train_per_class=2",
        "data.test_per_class=2", "train.epochs=1", "train.batch_size=8",
        "train.progress=false"]  # fmt: skip
GAUSSIANS = ["tuner.tii.epochs=1", "tuner.tii.align_epochs=1", "tuner.tii.samples_per_class=4",
             "tuner.tap.epochs=1", "tuner.tap.samples_per_class=4"]  # fmt: skip
MOS_ALIGN = ["tuner.align.epochs=1", "tuner.align.samples_per_class=4"]


def tiny(method, *overrides):
    options = GAUSSIANS if method in ("hash", "hide", "norga") else []
    options = MOS_ALIGN if method == "mos" else options
    # RanPAC's default M = 10000 (an 800 MB Gram matrix in each checkpoint of the chain, a
    # 10000-wide solve per task: 147 s) checks nothing here that M = 256 does not
    options += ["tuner.dim=256"] if method == "ranpac" else []
    return load_config(None, [*TINY, f"method={method}", *options, *overrides])


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread: faster on a busy machine, and results depend on the thread count, so
    the processes started below use one as well."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class Crash(BaseException):
    """The process dies here (nothing catches it, as nothing survives a kill)."""


def crash_on_call(monkeypatch, owner, name, only=None):
    """Make the first call of ``owner.name`` (whose arguments pass ``only``) raise Crash before
    it does anything."""
    real = getattr(owner, name)

    def crashing(*args, **kwargs):
        if only is None or only(*args):
            raise Crash
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, crashing)


def outcome(out):
    """What a finished run leaves that must not depend on crashes: metrics and the log."""
    metrics = json.loads((out / "metrics.json").read_text())
    log = (out / "log.jsonl").read_text().splitlines()
    return {k: v for k, v in metrics.items() if k not in TIMING}, log


def assert_strict_json(folder):
    """No NaN or Infinity in any JSON file of a run directory (nor in the checkpoint state)."""

    def refuse(constant):
        raise AssertionError(f"{constant} in a run directory")

    for path in [*folder.rglob("*.json"), *folder.rglob("*.jsonl")]:
        for line in path.read_text().splitlines() if path.suffix == ".jsonl" else [None]:
            json.loads(line if line is not None else path.read_text(), parse_constant=refuse)
    if (folder / "checkpoint" / checkpoint.CHECKPOINT).is_file():
        with safe_open(str(folder / "checkpoint" / checkpoint.CHECKPOINT), "pt") as f:
            json.loads(f.metadata()["state"], parse_constant=refuse)


# Crash points of the task-boundary writes, hit one after another by one run and its resumptions
# on a run of 2 tasks: (step, function that crashes at its first call, tasks in the checkpoint)
CHAIN = [
    ("boundary 1: checkpoint written, not synced", checkpoint.os, "fsync", None, 0),
    ("boundary 1: checkpoint in place, log not written", rundir.RunDir, "write_log",
     lambda self, rows: len(rows) == 1, 1),
    ("boundary 2: before the checkpoint is written", checkpoint, "save_file", None, 1),
    ("boundary 2: checkpoint written, not synced", checkpoint.os, "fsync", None, 1),
    ("boundary 2: checkpoint synced, not renamed", checkpoint.os, "replace",
     lambda src, dst: str(dst).endswith(checkpoint.CHECKPOINT), 1),
    ("boundary 2: checkpoint in place, log not written", rundir.RunDir, "write_log",
     lambda self, rows: len(rows) == 2, 2),
    ("log written, before metrics.json", rundir.RunDir, "write_metrics", None, 2),
    ("metrics.json written, before the plots", continual, "plot_accuracy_matrix", None, 2),
]  # fmt: skip


@pytest.fixture
def no_plots(monkeypatch):
    """Plots cost most of a tiny run; their writing stays a crash point (a stub that can
    crash), and test_learner checks the real files."""
    for name in ("plot_accuracy_matrix", "plot_average_accuracy", "plot_heatmap"):
        monkeypatch.setattr(continual, name, lambda *args, **kwargs: None)


@pytest.mark.parametrize("method", list(TUNERS))
def test_a_crash_at_each_step_of_a_task_boundary_resumes_to_the_unbroken_run(
    tmp_path, monkeypatch, method, no_plots
):
    """A run crashes at the first step, its resumption at the next one, and so on; after
    each crash the checkpoint holds the last finished task, and the run finally resumed
    equals the unbroken one exactly (metrics and log)."""
    config = tiny(method)
    run(config, tmp_path / "unbroken")
    out = tmp_path / "crashed"
    for i, (step, owner, name, only, tasks_done) in enumerate(CHAIN):
        with monkeypatch.context() as patch:
            crash_on_call(patch, owner, name, only)
            with pytest.raises(Crash):
                run(config, out, resume=i > 0)
        saved = load_checkpoint(out / "checkpoint")
        assert (saved[1].units_done if saved else 0) == tasks_done, step
        assert_strict_json(out)
    run(config, out, resume=True)
    assert outcome(out) == outcome(tmp_path / "unbroken")
    assert_strict_json(out)


def test_a_non_finite_loss_stops_in_one_line_and_keeps_the_last_task(
    tmp_path, monkeypatch, capsys, no_plots
):
    config = tiny("dualprompt")
    run(config, tmp_path / "unbroken")
    real, calls = torch.nn.functional.cross_entropy, []

    def nan_in_task_2(logits, labels, *args, **kwargs):  # task 1 takes 3 steps of 8 samples
        calls.append(1)
        loss = real(logits, labels, *args, **kwargs)
        return loss * float("nan") if len(calls) == 5 else loss

    out = tmp_path / "nan"
    with monkeypatch.context() as patch:
        patch.setattr("promptcl.protocols.continual.F.cross_entropy", nan_in_task_2)
        with pytest.raises(SystemExit) as stop:
            main(["run", *(a for s in TINY for a in ("--set", s)), "--set", "method=dualprompt",
                  "--out", str(out)])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 2 and len(err) == 1, err
    assert "non-finite loss (ce=nan" in err[0] and "task 2/2 epoch 1/1, step 2" in err[0]
    assert "train.lr" in err[0] and "new --out" in err[0]
    assert load_checkpoint(out / "checkpoint")[1].units_done == 1
    assert not (out / "metrics.json").exists()
    assert_strict_json(out)
    run(config, out, resume=True)  # resumable at its last good task boundary
    assert outcome(out) == outcome(tmp_path / "unbroken")


def test_b2n_stops_at_a_non_finite_loss_in_one_line(tmp_path, data_root, capsys):
    args = ["b2n", "--set", "backbone=tiny-bert", "--set", f"data.root={data_root}",
            "--set", "shots=1", "--set", "data.test_per_class=1", "--set", "train.epochs=1",
            "--set", "train.warmup_epochs=0", "--set", "train.lr=1e30",
            "--set", "train.progress=false", "--set", "method=coop"]  # fmt: skip
    with pytest.raises(SystemExit) as stop:
        main([*args, "--out", str(tmp_path / "b2n")])
    err = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 2 and len(err) == 1 and "non-finite loss" in err[0], err
    assert "epoch 1/1, step" in err[0] and "train.lr" in err[0]
    assert_strict_json(tmp_path / "b2n")


# -- real processes ----------------------------------------------------------------------------

CLI_TINY = [arg for s in [*TINY, "method=dualprompt", "data.num_tasks=4"] for arg in ("--set", s)]


def wait_for(condition, process, timeout=300):
    end = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < end, "timed out"
        time.sleep(0.01)


# python -c PROMPTCL READY GO PAUSE ARGS: import promptcl, create READY, wait until GO exists,
# run `promptcl ARGS`; PAUSE = "module:function:before|after" (or "-") holds the process still
# (READY.paused created) at the first call of that function, to be killed there
PROMPTCL = """import importlib, pathlib, signal, sys, time
import promptcl.cli, promptcl.protocols.continual
ready, go, pause = sys.argv[1:4]
# Ctrl-C as in a terminal: a suite started in the background (nohup cmd &) passes SIGINT ignored
signal.signal(signal.SIGINT, signal.default_int_handler)


def hold(*args, **kwargs):
    pathlib.Path(ready + ".paused").touch()
    time.sleep(600)


if pause != "-":
    module, path, when = pause.split(":")
    owner = importlib.import_module(module)
    *parents, name = path.split(".")
    for parent in parents:
        owner = getattr(owner, parent)
    real = getattr(owner, name)
    setattr(owner, name, lambda *a, **k: hold() if when == "before" else (real(*a, **k), hold()))
pathlib.Path(ready).touch()
while go != "-" and not pathlib.Path(go).exists():
    time.sleep(0.002)
promptcl.cli.main(sys.argv[4:])
"""


@pytest.fixture
def promptcl(tmp_path):
    """Start ``promptcl ARGS`` in a new process as PROMPTCL says: ``promptcl(NAME, *ARGS,
    go=, pause=)``; processes still running at the end of the test are killed."""
    started = []

    def start(name, *args, go="-", pause="-"):
        env = {k: v for k, v in os.environ.items() if k != "PROMPTCL_DATA"}
        env["OMP_NUM_THREADS"] = "1"  # as in this process (one_thread): the same floats
        argv = [sys.executable, "-c", PROMPTCL, tmp_path / name, go, pause, *args]
        started.append(subprocess.Popen(list(map(str, argv)), stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True, env=env))  # fmt: skip
        return started[-1]

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
        process.communicate()


def tasks_done(out):
    saved = load_checkpoint(out / "checkpoint") if (out / "checkpoint").is_dir() else None
    return saved[1].units_done if saved else 0


def test_two_runs_at_once_then_kill_9_twice_then_resume_equals_the_unbroken_run(
    tmp_path, promptcl, no_plots
):
    """Real processes: of two runs started at once on one --out exactly one proceeds. SIGKILL
    it just after its first checkpoint is in place (no finally clause runs: its lock file
    stays); SIGKILL the resumed run (which takes the stale lock over, saying so) in the middle
    of a task, trained but not evaluated. Resuming once more gives the unbroken run exactly."""
    config = load_config(None, [*TINY, "method=dualprompt", "data.num_tasks=4"])
    run(config, tmp_path / "unbroken")
    out, go = tmp_path / "run", tmp_path / "go"
    after_checkpoint = "promptcl.core.run:save_checkpoint:after"
    pair = [promptcl(f"p{i}", "run", *CLI_TINY, "--out", out, go=go,
                     pause=after_checkpoint) for i in range(2)]  # fmt: skip
    for i, p in enumerate(pair):
        wait_for((tmp_path / f"p{i}").exists, p)
    go.touch()  # both start the run at once
    while all(p.poll() is None for p in pair):
        time.sleep(0.01)
    loser = next(p for p in pair if p.poll() is not None)
    winner = pair[1 - pair.index(loser)]
    _, err = loser.communicate()
    lines = err.strip().splitlines()
    assert loser.returncode == 2 and len(lines) == 1, err
    assert "in use by process" in lines[0] or "already exists" in lines[0]

    wait_for((tmp_path / f"p{pair.index(winner)}.paused").exists, winner)
    winner.send_signal(signal.SIGKILL)
    winner.communicate()
    assert (out / ".lock").exists() and tasks_done(out) == 1
    assert not (out / "log.jsonl").read_text()

    mid_task = "promptcl.protocols.continual:Experiment.evaluate:before"
    resumed = promptcl("r", "run", "--resume", out, pause=mid_task)
    wait_for((tmp_path / "r.paused").exists, resumed)
    resumed.send_signal(signal.SIGKILL)
    _, err = resumed.communicate()
    assert "was killed; taking it over" in err
    assert tasks_done(out) == 1 and not (out / "metrics.json").exists()

    run(config, out, resume=True)
    assert outcome(out) == outcome(tmp_path / "unbroken")
    assert not (out / ".lock").exists()


# -- full disks and files in the way -----------------------------------------------------------


def cli_run(out, *args):
    main(["run", *(a for s in TINY for a in ("--set", s)), "--set", "method=dualprompt",
          "--out", str(out), *args])  # fmt: skip


def no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def no_space_says_safetensors(*args, **kwargs):
    raise SafetensorError("Error while serializing: IoError(No space left on device (os error 28))")


# where the disk fills: (what fails, at which call, tasks in the kept checkpoint)
FULL = [
    ("checkpoint of task 1", checkpoint, "save_file", no_space, 1, 0),
    ("checkpoint of task 2 (safetensors' error)", checkpoint, "save_file",
     no_space_says_safetensors, 2, 1),
    ("checkpoint sync", checkpoint.os, "fsync", no_space, 2, 1),
    ("log of task 2", rundir, "write_text", no_space, 3, 2),  # 1: the empty log.jsonl
    ("metrics.json", rundir.RunDir, "write_metrics", no_space, 1, 2),
]  # fmt: skip


@pytest.mark.parametrize(("owner", "name", "fail", "call", "kept"), [c[1:] for c in FULL],
                         ids=[c[0] for c in FULL])  # fmt: skip
def test_a_full_disk_stops_in_one_line_and_resumes_to_the_unbroken_run(
    tmp_path, monkeypatch, capsys, no_plots, owner, name, fail, call, kept
):
    config = tiny("dualprompt")
    run(config, tmp_path / "unbroken")
    out, real, calls = tmp_path / "full", getattr(owner, name), []

    def fills(*args, **kwargs):
        calls.append(1)
        return fail() if len(calls) == call else real(*args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(owner, name, fills)
        with pytest.raises(SystemExit) as stop:
            cli_run(out)
    err = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 2 and len(err) == 1, err
    assert "the disk is full" in err[0] and f"the checkpoint after {kept} task(s)" in err[0]
    assert f"promptcl run --resume {out}" in err[0]
    assert tasks_done(out) == kept and not list(out.rglob("*.tmp"))
    assert not (out / ".lock").exists()
    run(config, out, resume=True)
    assert outcome(out) == outcome(tmp_path / "unbroken")


def test_a_log_that_became_a_folder_stops_in_one_line_and_leaves_no_temp_file(
    tmp_path, capsys, no_plots
):
    out = tmp_path / "run"
    run(tiny("dualprompt"), out, stop_after=1)
    (out / "log.jsonl").unlink()
    (out / "log.jsonl").mkdir()
    with pytest.raises(SystemExit) as stop:
        main(["run", "--resume", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 2 and len(err) == 1, err
    assert f"{out / 'log.jsonl'}: cannot write there" in err[0] and "task(s)" in err[0]
    assert not list(out.rglob("*.tmp")) and tasks_done(out) == 1


def test_sigterm_stops_like_ctrl_c_keeping_the_last_task_and_releasing_the_lock(
    tmp_path, promptcl, no_plots
):
    """Real process: SIGTERM (preemption) just after the first checkpoint is in place: one
    line saying how to resume, exit 143, no lock left; resuming gives the unbroken run."""
    config = load_config(None, [*TINY, "method=dualprompt", "data.num_tasks=4"])
    run(config, tmp_path / "unbroken")
    out = tmp_path / "run"
    after_checkpoint = "promptcl.core.run:save_checkpoint:after"
    p = promptcl("p", "run", *CLI_TINY, "--out", out, pause=after_checkpoint)
    wait_for((tmp_path / "p.paused").exists, p)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate()
    lines = err.strip().splitlines()
    assert p.returncode == 143 and len(lines) == 1, err
    assert lines[0] == f"promptcl: terminated; continue with: promptcl run --resume {out}"
    assert not (out / ".lock").exists() and tasks_done(out) == 1
    run(config, out, resume=True)
    assert outcome(out) == outcome(tmp_path / "unbroken")


def test_ctrl_c_at_start_up_prints_one_line(tmp_path, promptcl):
    """Real process: Ctrl-C while the backbone loads: one line, exit 130, nothing written."""
    out = tmp_path / "run"
    p = promptcl("p", "run", *CLI_TINY, "--out", out,
                 pause="promptcl.protocols.continual:build_backbone:before")  # fmt: skip
    wait_for((tmp_path / "p.paused").exists, p)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate()
    lines = err.strip().splitlines()
    assert p.returncode == 130 and len(lines) == 1, err
    assert lines[0].startswith("promptcl: interrupted") and not out.exists()
