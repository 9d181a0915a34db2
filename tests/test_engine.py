"""The engine (Lightning Fabric): several CPU processes give what one process gives, precision
and logger keys, one-line errors for engine settings that cannot work here."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors import safe_open

from promptcl.cli import main
from promptcl.protocols.b2n import load_b2n_config, run_b2n
from promptcl.protocols.continual import load_config, run

TINY = ["backbone=tiny-bert", "data.train_per_class=6", "train.epochs=1", "train.batch_size=8"]
METHODS = {
    "ncm": ["method=ncm"],
    "dualprompt": ["method=dualprompt"],
    "hash": [
        "method=hash",
        "tuner.tii.epochs=1",
        "tuner.tii.align_epochs=1",
        "tuner.tap.epochs=1",
    ],
}


def cli(args, processes=2, **kwargs):
    """`promptcl ARGS` in a fresh interpreter with ``processes`` CPU processes (Fabric starts
    the second one by running the same command again)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    env.pop("PROMPTCL_DEFAULT_OUT", None)
    engine = ["--set", "train.accelerator=cpu", "--set", f"train.devices={processes}"]
    command = [sys.executable, "-m", "promptcl", *args, *engine]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, **kwargs)  # fmt: skip


def finish(process, timeout=600):
    out, err = process.communicate(timeout=timeout)
    assert process.returncode == 0, err[-3000:]
    return out, err


def sets(overrides):
    return [arg for o in overrides for arg in ("--set", o)]


def one_process(overrides, out):
    return run(load_config(None, [*overrides, "train.progress=false"]), out)


# ncm: statistics all-reduced; hash: prompts, router and keys by gradient plus HiDe's stages
# (dualprompt's gradients under two processes: test_two_processes_resume_after_a_kill)
@pytest.mark.parametrize("method", ["ncm", "hash"])
def test_two_processes_match_one(method, tmp_path):
    """ncm learns nothing by gradient: its statistics and evaluation must be exact. hash trains
    with the same global batch: DDP averages two half-batch gradients where one
    process sums the whole batch, so the parameters differ by float32 rounding, which can flip
    a near-tied prediction of a tiny random model (at most 2 of the 24 test samples here)."""
    overrides = [*TINY, *METHODS[method]]
    two = cli(["run", *sets(overrides), "--out", str(tmp_path / "two")])
    single = one_process(overrides, tmp_path / "one")
    out, _ = finish(two)
    assert out.count("FAA") == 1, "only rank 0 prints the summary"
    double = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert double["world_size"] == 2 and double["strategy"] == "DDPStrategy"
    assert single["world_size"] == 1
    if method == "ncm":
        assert double["acc_matrix"] == single["acc_matrix"]
        return
    a = torch.tensor(single["acc_matrix"][-1])
    b = torch.tensor(double["acc_matrix"][-1])
    per_task = 100 / 6  # 6 test samples per task in the built-in intents
    assert (a - b).abs().max() <= 2 * per_task + 1e-9
    log_a = [json.loads(line) for line in (tmp_path / "one" / "log.jsonl").read_text().splitlines()]
    log_b = [json.loads(line) for line in (tmp_path / "two" / "log.jsonl").read_text().splitlines()]
    first = log_a[0]["losses"]["ce"], log_b[0]["losses"]["ce"]
    assert first[0] == pytest.approx(first[1], rel=1e-4), "first task's mean loss, global batch"


def test_two_processes_resume_after_a_kill(tmp_path):
    """kill -9 of both processes after the first task; the resumed two-process run equals an
    unbroken two-process run exactly (same shards, same reductions). The unbroken run trains
    beside the broken one: a tiny model's ranks mostly wait on each other's reductions."""
    overrides = [*TINY, "data.train_per_class=null", "train.epochs=3", *METHODS["dualprompt"]]
    unbroken = cli(["run", *sets(overrides), "--out", str(tmp_path / "unbroken")])
    broken = cli(["run", *sets(overrides), "--out", str(tmp_path / "broken")],
                 start_new_session=True)  # fmt: skip
    log = tmp_path / "broken" / "log.jsonl"
    deadline = time.monotonic() + 600
    while not (log.is_file() and log.read_text().strip()) and broken.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    os.killpg(broken.pid, signal.SIGKILL)
    broken.wait()
    assert not (tmp_path / "broken" / "metrics.json").exists(), "killed before the end"
    finish(cli(["run", "--resume", str(tmp_path / "broken")]))
    finish(unbroken)
    a = json.loads((tmp_path / "unbroken" / "metrics.json").read_text())
    b = json.loads((tmp_path / "broken" / "metrics.json").read_text())
    assert a["acc_matrix"] == b["acc_matrix"]


def test_b2n_on_two_processes(data_root, tmp_path):
    """zeroshot: sharded evaluation equals one process exactly; coop: the same global batch."""
    base = ["backbone=tiny-bert", "shots=4", "data.test_per_class=4", f"data.root={data_root}"]
    for method in ("zeroshot", "coop"):
        overrides = [*base, f"method={method}", "train.epochs=2", "train.batch_size=8"]
        finish(cli(["b2n", *sets(overrides), "--out", str(tmp_path / f"{method}2")]))
        one = run_b2n(
            load_b2n_config(None, [*overrides, "train.progress=false"]), tmp_path / method
        )
        double = json.loads((tmp_path / f"{method}2" / "metrics.json").read_text())
        assert double["world_size"] == 2
        if method == "zeroshot":
            assert (double["base_acc"], double["novel_acc"]) == (one["base_acc"], one["novel_acc"])
        else:
            assert double["final_loss"] == pytest.approx(one["final_loss"], rel=1e-4)


@pytest.mark.parametrize("precision", ["bf16-mixed", "bf16-true"])
def test_bf16_trains_fp32_tensors_and_records_the_precision(precision, tmp_path):
    """bf16-mixed: autocast over fp32 weights; bf16-true: the frozen backbone stored in bf16.
    Either way the trained tensors, their checkpoint and the optimiser stay fp32."""
    config = load_config(None, [*TINY, *METHODS["dualprompt"], f"train.precision={precision}"])
    summary = run(config, tmp_path)
    assert summary["precision"] == precision
    with safe_open(str(tmp_path / "checkpoint" / "tuner.safetensors"), "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} <= {torch.float32, torch.long}  # noqa: SIM118
    from promptcl.protocols.continual import Experiment

    exp = Experiment(config)
    stored = {p.dtype for p in exp.backbone.parameters()}
    assert stored == ({torch.bfloat16} if precision == "bf16-true" else {torch.float32})


@pytest.mark.parametrize("method", ["hash", "ranpac"])
def test_bf16_runs_the_end_of_task_statistics_in_fp32(method, monkeypatch):
    """Under bf16 only the forward passes of ``end_task`` (TaskData.map) take the run's
    autocast; the statistics after them (class Gaussians, TAP's head alignment, ridge solves)
    run in fp32: under autocast TAP's head alignment lost 25 FAA points on clinc150-15."""
    from promptcl.protocols.continual import Experiment
    from promptcl.tuners import base

    own = METHODS.get(method, [f"method={method}", "tuner.dim=256"])  # ranpac: a small M
    config = load_config(None, [*TINY, *own, "train.precision=bf16-mixed", "train.progress=false"])
    exp = Experiment(config)
    seen = {"map": [], "end_task": []}
    map_, end_task = base.TaskData.map, type(exp.tuner).end_task

    def probe_map(self, fn):
        return map_(self, lambda b: seen["map"].append(torch.is_autocast_enabled("cpu")) or fn(b))

    def probe_end_task(self, *args):
        seen["end_task"].append(torch.is_autocast_enabled("cpu"))
        return end_task(self, *args)

    monkeypatch.setattr(base.TaskData, "map", probe_map)
    monkeypatch.setattr(type(exp.tuner), "end_task", probe_end_task)
    exp.tuner.begin_task(0, exp.training_tasks[0])
    exp.train_task(0)
    assert seen["end_task"] == [False]
    assert seen["map"] and set(seen["map"]) == {True}


@pytest.mark.parametrize("native", [True, False])
def test_bf16_on_a_cpu_without_native_bf16_warns(native, monkeypatch):
    """Emulated bf16 products run far slower than fp32: the user is told before training."""
    import warnings

    from promptcl import engine

    monkeypatch.setattr(engine, "cpu_has_bf16", lambda: native)
    cfg = load_config(None, [*TINY, "method=ncm", "train.precision=bf16-mixed"]).train
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        engine.Engine(cfg)
        engine.Engine(load_config(None, [*TINY, "method=ncm"]).train)  # 32-true: never
    said = [str(w.message) for w in caught if "native bf16" in str(w.message)]
    assert len(said) == (0 if native else 1)
    assert not said or "use train.precision=32-true" in said[0]


def test_compile_key_compiles_the_block_computation():
    from promptcl.protocols.continual import Experiment

    exp = Experiment(load_config(None, [*TINY, "method=ncm", "train.compile=true"]))
    assert hasattr(exp.backbone.run_block, "_torchdynamo_orig_callable")


def test_csv_logger_writes_steps_and_tasks(tmp_path):
    one_process([*TINY, *METHODS["dualprompt"], "train.logger=csv"], tmp_path)
    (csv,) = (tmp_path / "logs").rglob("metrics.csv")
    header, *rows = csv.read_text().splitlines()
    columns = header.split(",")
    assert {"ce", "lr", "task", "avg_acc", "task_id_acc", "acc_task1", "step"} <= set(columns)
    task_rows = [r for r in rows if r.split(",")[columns.index("avg_acc")]]
    assert len(task_rows) == 4  # one per task of the built-in intents


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["train.precision=16-mixed", "train.accelerator=cpu"], "16-mixed needs CUDA"),
        (["train.accelerator=cuda"], "train.accelerator"),
        (["train.precision=fp8"], "train.precision='fp8'"),
        (["train.devices=0"], "train.devices=0"),
        (["train.strategy=fsdp"], "train.strategy='fsdp'"),
        (["train.logger=comet"], "train.logger='comet'"),
    ],
)
def test_engine_settings_that_cannot_work_are_one_line_errors(overrides, message, tmp_path,
                                                               capsys):  # fmt: skip
    if "train.accelerator=cuda" in overrides and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as err:
        main(["run", *sets([*TINY, *overrides]), "--out", str(out)])
    assert err.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], lines
    assert not out.exists()


def test_an_error_in_two_processes_is_said_once(tmp_path):
    """Every rank raises the same UsageError; only rank 0 prints it, and the run exits 2."""
    args = [
        "run",
        *sets([*TINY, "benchmark=clinc150-15", "data.num_tasks=3"]),
        "--out",
        str(tmp_path / "r"),
    ]
    process = cli(args)
    out, err = process.communicate(timeout=600)
    assert process.returncode == 2
    lines = [line for line in err.splitlines() if "error" in line]
    assert lines == [
        "promptcl: error: benchmark clinc150-15 does not read data.num_tasks (set to 3); remove it"
    ], err[-2000:]


def test_tensorboard_logger_writes_event_files(tmp_path):
    pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed")
    one_process([*TINY, "method=ncm", "train.logger=tensorboard"], tmp_path)
    assert list((tmp_path / "logs").rglob("events.out.tfevents.*"))
