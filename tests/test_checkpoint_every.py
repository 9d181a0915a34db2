"""train.checkpoint_every: checkpoints within a unit (a continual task; a b2n epoch) hold the
tensors, the optimiser, the position in the epoch and torch's random state, so a run killed
in the middle of a unit and resumed equals the unbroken run exactly."""

import json
import signal

import pytest
import torch
from test_dual_data import TINY as B2N_TINY
from test_dual_data import write_clinc
from test_faults import (
    CLI_TINY,
    GAUSSIANS,
    TINY,
    Crash,
    assert_strict_json,
    one_thread,
    outcome,
    promptcl,
    wait_for,
)

import promptcl.core.run as core
from promptcl import load, load_config, run
from promptcl.core.checkpoint import load_checkpoint
from promptcl.core.loop import RNG
from promptcl.errors import UsageError
from promptcl.protocols.b2n import load_b2n_config, run_b2n

__all__ = ["one_thread", "promptcl"]  # fixtures of test_faults

# dualprompt with Adam: 2 tasks of 3 steps an epoch (8 samples a batch), 2 epochs
EVERY = ["method=dualprompt", "train.optimizer=adam", "train.epochs=2", "train.checkpoint_every=2"]
AFTER_CHECKPOINT = "promptcl.core.run:save_checkpoint:after"


def saved(out):
    """The tensors and state of the run's checkpoint."""
    return load_checkpoint(out / "checkpoint")


def crash_after_checkpoint(monkeypatch, when):
    """Raise Crash just after the first checkpoint whose state passes ``when`` is in place."""
    real = core.save_checkpoint

    def save_then_crash(folder, tensors, state):
        real(folder, tensors, state)
        if when(state):
            raise Crash

    monkeypatch.setattr(core, "save_checkpoint", save_then_crash)


def test_a_run_killed_within_a_task_resumes_to_the_unbroken_run(tmp_path, promptcl, monkeypatch):
    """A real process, SIGKILLed just after its first checkpoint: within task 1, epoch 1, step
    2 of 3. Resumed in a real process, SIGKILLed again just after its first checkpoint: within
    task 1, epoch 2, step 1. Resumed in this one, crashing within task 2 (epoch 2, step 1), and
    resumed once more: the unbroken run's metrics and log exactly."""
    config = load_config(None, [*TINY, *EVERY])
    run(config, tmp_path / "unbroken")
    out = tmp_path / "run"
    args = [*CLI_TINY, *(a for s in [*EVERY, "data.num_tasks=2"] for a in ("--set", s))]
    for name in ("first", "resumed"):
        resume = ["--resume", out] if name == "resumed" else [*args, "--out", out]
        process = promptcl(name, "run", *resume, pause=AFTER_CHECKPOINT)
        wait_for((tmp_path / f"{name}.paused").exists, process)
        process.send_signal(signal.SIGKILL)
        process.communicate()
    tensors, state = saved(out)
    assert (state.units_done, state.unit_epoch, state.epoch_steps, state.steps) == (0, 1, 1, 4)
    assert len(state.unit_steps) == 4 and RNG in tensors
    assert any(name.startswith("optimizer.") for name in tensors)
    assert not (out / "log.jsonl").read_text()

    with monkeypatch.context() as patch:
        crash_after_checkpoint(patch, lambda state: state.units_done == 1 and state.unit_steps)
        with pytest.raises(Crash):
            run(config, out, resume=True)
    state = saved(out)[1]
    assert (state.units_done, state.unit_epoch, state.epoch_steps) == (1, 0, 2)
    with pytest.raises(UsageError, match="in the middle of task 2"):
        load(out)  # a model half-way into a task is not loaded as one after the task before
    run(config, out, resume=True)
    assert outcome(out) == outcome(tmp_path / "unbroken")
    assert_strict_json(out)
    assert not saved(out)[1].within_unit()  # the last checkpoint is a boundary's


def test_hash_with_an_adapted_tii_query_crashed_in_its_first_task_resumes_exactly(
    tmp_path, monkeypatch
):
    """tuner.tii.adapt trains a prefix and a head beside task 0's prompts, out of the loop's
    cross-entropy: a crash within task 0 (epoch 1, after its first checkpoint), resumed, gives
    the unbroken run's figures, log and tensors."""
    sets = ["method=hash", "tuner.tii.adapt=true", "tuner.blocks=[0]", *EVERY[1:]]
    config = load_config(None, [*TINY, *GAUSSIANS, *sets])
    run(config, tmp_path / "unbroken")
    out = tmp_path / "run"
    with monkeypatch.context() as patch:
        crash_after_checkpoint(patch, lambda state: state.within_unit())
        with pytest.raises(Crash):
            run(config, out)
    tensors, state = saved(out)
    assert state.units_done == 0 and "stages.adapted.prompt" in tensors
    run(config, out, resume=True)
    assert outcome(out) == outcome(tmp_path / "unbroken")
    assert "tii_adapt" in outcome(out)[1][0]  # task 0's log line has the term, task 1's not
    assert "tii_adapt" not in outcome(out)[1][1]
    tensors = [saved(tmp_path / name)[0] for name in ("run", "unbroken")]
    assert tensors[0].keys() == tensors[1].keys()
    assert all(torch.equal(tensors[0][k], tensors[1][k]) for k in tensors[0])


@pytest.mark.parametrize(
    "backbone, optimizer, workers",
    [("tiny-bert", "sgd", 0), ("tiny-bert", "adam", 0), ("tiny-clip", "sgd", 0),
     ("tiny-clip", "adam", 1)],
)  # fmt: skip
def test_a_b2n_run_crashed_within_an_epoch_resumes_to_the_unbroken_run(
    tmp_path, monkeypatch, backbone, optimizer, workers
):
    """coop, 3 epochs of 3 or more steps, a checkpoint every 2 steps of an epoch: a crash after
    the first in epoch 2 (at its step 2), resumed, gives the unbroken run's figures, log and
    tensors exactly; on images too, whose training batches are augmented at random (in the main
    process, or in a loader worker seeded from torch's random state)."""
    if backbone == "tiny-bert":
        data = f"data.root={write_clinc(tmp_path / 'data')}"
    else:
        data = "benchmark=random-images"
    sets = [f"backbone={backbone}", "method=coop", "train.epochs=3", "train.batch_size=2",
            f"train.optimizer={optimizer}", "train.checkpoint_every=2", f"data.workers={workers}",
            data]  # fmt: skip
    config = load_b2n_config(None, [*B2N_TINY, *sets])
    unbroken = run_b2n(config, tmp_path / "unbroken")
    out = tmp_path / "run"
    with monkeypatch.context() as patch:
        crash_after_checkpoint(patch, lambda state: state.within_unit() and state.units_done)
        with pytest.raises(Crash):
            run_b2n(config, out)
    state = saved(out)[1]
    assert (state.units_done, state.unit_epoch, state.epoch_steps) == (1, 1, 2)
    resumed = run_b2n(config, out, resume=True)
    timing = ("train_seconds", "eval_seconds", "checkpoint_bytes")
    assert {k: v for k, v in resumed.items() if k not in timing} == {
        k: v for k, v in unbroken.items() if k not in timing
    }
    logs = [(tmp_path / name / "log.jsonl").read_text() for name in ("run", "unbroken")]
    assert [json.loads(line)["losses"] for line in logs[0].splitlines()] == [
        json.loads(line)["losses"] for line in logs[1].splitlines()
    ]
    tensors = [saved(tmp_path / name)[0] for name in ("run", "unbroken")]
    assert tensors[0].keys() == tensors[1].keys()
    assert all(torch.equal(tensors[0][k], tensors[1][k]) for k in tensors[0])


def test_without_checkpoint_every_a_boundary_state_is_as_before(tmp_path):
    """The position fields are written within a unit only; older states load at a boundary."""
    config = load_config(None, [*TINY, "method=dualprompt", "data.num_tasks=2"])
    run(config, tmp_path / "run", stop_after=1)
    tensors, state = saved(tmp_path / "run")
    assert "unit_steps" not in state.to_json() and RNG not in tensors
    assert not any(name.startswith("optimizer.") for name in tensors)


@pytest.mark.parametrize("value", ["0", "-1"])
def test_a_bad_checkpoint_every_is_a_one_line_error(value):
    with pytest.raises(UsageError, match="train.checkpoint_every") as err:
        load_config(None, [f"train.checkpoint_every={value}"])
    assert "\n" not in str(err.value)
