"""promptcl sweep, table and tune: the grid and its folder names, skip / resume / --point /
--jobs, tables whose cells are the runs' own figures (mean and sample std worked by hand), one-
line errors for bad input, and tuning that chooses on the validation split and reports one test
run."""

import csv
import io
import json
import math
import os
import statistics
import subprocess
import sys

import pytest

from promptcl.cli import main
from promptcl.errors import UsageError
from promptcl.sweeps.grid import COMMANDS, Sweep, grid, split_values
from promptcl.sweeps.table import collect, mean_std
from promptcl.sweeps.tune import STUDY, STUDY_NAME, Tuning

FIXED = ["backbone=tiny-bert", "data.train_per_class=2", "data.test_per_class=1",
         "train.epochs=1", "train.progress=false"]  # fmt: skip
SETS = [arg for item in FIXED for arg in ("--set", item)]
GRID = ["--set", "method=ncm,linear", "--set", "seed=0,1", *SETS]
NAMES = ["method=ncm-seed=0", "method=ncm-seed=1", "method=linear-seed=0",
         "method=linear-seed=1"]  # fmt: skip


def metrics(folder):
    return json.loads((folder / "metrics.json").read_text())


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """A 2-method x 2-seed sweep, run in this process."""
    out = tmp_path_factory.mktemp("sweeps") / "grid"
    main(["sweep", "run", *GRID, "--out", str(out)])
    return out


@pytest.mark.parametrize(
    ("text", "values"),
    [
        ("a", ["a"]),
        ("hash,hide", ["hash", "hide"]),
        ("[0,1],[2,3]", ["[0,1]", "[2,3]"]),
        ("{a: 1, b: 2},x", ["{a: 1, b: 2}", "x"]),
        ("'x, y',z", ["'x, y'", "z"]),
        ("a\\, b {},c", ["a, b {}", "c"]),
        ("", [""]),
    ],
)
def test_values_split_on_commas_outside_brackets_and_quotes(text, values):
    assert split_values(text) == values


def test_points_are_the_product_in_order_named_by_their_swept_values():
    points = grid([], [("method", ["hash", "hide"]), ("seed", ["0", "1", "2"]), ("x", ["a/b"])])
    names = ["method=hash-seed=0", "method=hash-seed=1", "method=hash-seed=2",
             "method=hide-seed=0"]  # fmt: skip
    assert [p.name for p in points[:4]] == names and [p.index for p in points] == list(range(6))
    assert points[5].sets == ("method=hide", "seed=2", "x=a/b")
    files = grid(["a.yaml", "dir/b.yaml"], [("seed", ["0"])])
    assert [p.name for p in files] == ["config=a", "config=b"]
    assert files[1].config == "dir/b.yaml"
    assert grid([], [("seed", ["0"])])[0].name == "run"
    # a value that is not a plain name keeps a readable part and a digest of the whole
    (a, b) = grid([], [("tuner.blocks", ["[0,1]", "_0_1_"])])
    assert a.name.startswith("tuner.blocks=_0_1_~") and b.name == "tuner.blocks=_0_1_"


def test_a_sweep_writes_one_run_per_point_and_its_grid(swept):
    record = json.loads((swept / "sweep.json").read_text())
    assert [p["name"] for p in record["points"]] == NAMES
    assert len(record["commands"]) == 1
    assert record["commands"][0].startswith("promptcl sweep run --set method=ncm,linear")
    for name in NAMES:
        m = metrics(swept / name)
        method, seed = name.split("-")
        assert (m["method"], m["seed"]) == (method[7:], int(seed[5:]))


def test_the_table_holds_the_runs_mean_and_sample_std(swept, capsys):
    main(["table", str(swept)])
    text = capsys.readouterr().out
    lines = text.splitlines()
    assert lines[0] == ("| method | benchmark | seeds | FAA | CAA | FM | task-id acc | "
                        "trained params | train s |")  # fmt: skip
    for row, method in zip(lines[2:4], ["ncm", "linear"], strict=True):
        a, b = (metrics(swept / n)["faa"] for n in NAMES if f"method={method}-" in n)
        mean, std = (a + b) / 2, abs(a - b) / math.sqrt(2)  # two values: |a - b| / sqrt(2)
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[:3] == [method, "builtin-intents", "0 1"]
        assert cells[3] == f"{mean:.2f} ± {std:.2f}"
        assert cells[6] == "-"  # no task inferred
    assert "Machine: " in text and "Command: `promptcl sweep run --set method=ncm" in text
    main(["table", str(swept), "--format", "csv"])
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out.split("\n#")[0])))
    first = [metrics(swept / n) for n in NAMES[:2]]
    assert float(rows[0]["FM"]) == pytest.approx((first[0]["fm"] + first[1]["fm"]) / 2, abs=1e-4)
    assert rows[1]["method"] == "linear" and rows[1]["runs"] == "2"
    main(["table", str(swept / NAMES[0]), "--format", "latex"])
    latex = capsys.readouterr().out
    assert latex.startswith("\\begin{tabular}") and "\\bottomrule" in latex


def test_mean_std_on_hand_worked_values():
    assert mean_std([1.0, 2.0, 3.0]) == "2.00 ± 1.00"
    assert mean_std([5.0, None]) == "5.00" and mean_std([None]) == "-"


def test_rerunning_skips_the_finished_points(swept, capsys):
    before = [(swept / n / "metrics.json").stat().st_mtime_ns for n in NAMES]
    main(["sweep", "run", *GRID, "--out", str(swept)])
    assert "4 of 4 points finished before" in capsys.readouterr().out
    assert before == [(swept / n / "metrics.json").stat().st_mtime_ns for n in NAMES]


def test_an_unfinished_point_resumes_to_the_same_figures(swept, tmp_path, capsys):
    out = tmp_path / "again"
    sweep = Sweep.from_args("run", None, ["method=linear", "seed=0", *FIXED], out)
    sweep.open("here")
    (point,) = sweep.points
    COMMANDS["run"].run(sweep.config(point), out / point.name, stop_after=1)
    assert sweep.status(point) == "unfinished"
    main(["sweep", "run", "--set", "method=linear", "--set", "seed=0", *SETS, "--out", str(out)])
    assert f"point {point.name}: resumed and finished" in capsys.readouterr().out
    assert metrics(out / point.name)["acc_matrix"] == metrics(swept / NAMES[2])["acc_matrix"]
    found = collect([swept, out])  # a sweep folder and a run directory
    assert [run.path for run in found.runs] == [*(swept / n for n in NAMES), out / point.name]


def test_a_grid_grows_in_its_folder(tmp_path):
    out = tmp_path / "grow"
    Sweep.from_args("run", None, ["method=ncm", "seed=0,1", *FIXED], out).open("here")
    Sweep.from_args("run", None, ["method=ncm", "seed=1,2", *FIXED], out).open("there")
    record = json.loads((out / "sweep.json").read_text())
    assert [p["name"] for p in record["points"]] == ["seed=0", "seed=1", "seed=2"]
    assert len(record["commands"]) == 2 and record["machine"] == "here"


def test_point_k_runs_that_point_only(tmp_path, capsys):
    out = tmp_path / "array"
    main(["sweep", "run", *GRID, "--out", str(out), "--list"])
    listed = capsys.readouterr().out.splitlines()
    assert [line.split()[1] for line in listed] == NAMES and not out.exists()
    main(["sweep", "run", *GRID, "--out", str(out), "--point", "1"])
    assert sorted(p.name for p in out.iterdir()) == ["method=ncm-seed=1", "sweep.json"]
    assert metrics(out / NAMES[1])["seed"] == 1


def test_jobs_run_points_in_subprocesses(tmp_path):
    out = tmp_path / "jobs"
    args = ["sweep", "run", "--set", "method=ncm", "--set", "seed=0,1", *SETS, "--out", out]
    result = subprocess.run([sys.executable, "-m", "promptcl", *map(str, args), "--jobs", "2"],
                            capture_output=True, text=True, timeout=600)  # fmt: skip
    assert result.returncode == 0, result.stderr
    for name in ["seed=0", "seed=1"]:
        assert metrics(out / name)["method"] == "ncm"
        assert (
            f"point {name}: finished" in result.stdout and (out / "logs" / f"{name}.log").is_file()
        )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["sweep", "run", "--set", "method"], "--set 'method' is not KEY=VALUE[,VALUE...]"),
        (["sweep", "run", "--set", "method=ncm,,l2p"], "has an empty value"),
        (["sweep", "run", "--set", "seed=0", "--set", "seed=1"], "gives seed twice"),
        (["sweep", "run", "--set", "seed=0"], "pass --out SWEEP_DIR"),
        (["sweep", "run", "--set", "train.lr=0.1,-1"], "point train.lr=-1: bad config: "),
        (["sweep", "run", "--set", "seed=0,1,0"], "two points make the folder seed=0"),
        (["sweep", "run", "--set", "seed=0,1", "--point", "2"], "--point 2: the sweep has 2"),
        (["sweep", "run", "--set", "seed=0", "--jobs", "0"], "--jobs 0 must be >= 1"),
        (["table", "."], "is neither a run directory"),
        (["tune", "run", "--set", "method=ncm"], "pass --out TUNE_DIR"),
        (["tune", "run"], "nothing to tune"),
        (["tune", "run", "--range", "train.lr=1:0"], "needs finite LOW < HIGH"),
        (["tune", "run", "--range", "train.lr=0:1:log"], "a log range needs LOW > 0"),
        (["tune", "run", "--range", "train.lr=a:b"], "LOW and HIGH must be numbers"),
        (["tune", "run", "--set", "train.lr=1", "--range", "train.lr=0:1"], "both --set and"),
        (
            ["tune", "run", "--range", "train.lr=0.1:1"],
            "benchmark builtin-intents has no validation split",
        ),  # fmt: skip
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    needs_out = "--out" not in args and "pass --out" not in message and args[0] != "table"
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as stop:
        main([*args, *(["--out", str(out)] if needs_out else [])])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and message in err, err
    assert len(err.strip().splitlines()) == 1 and not out.exists()


def test_a_point_of_other_settings_in_a_sweep_folder_is_refused(swept, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["sweep", "run", *GRID, "--set", "data.max_length=32", "--out", str(swept)])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and "method=ncm-seed=0 was made with other settings" in err


def test_a_sweep_reopens_from_its_config_file_elsewhere_when_it_loads_the_same(tmp_path):
    """Another checkout's copy of the config file is the same settings; another content is not,
    nor is a recorded file that is gone."""
    files = {}
    for folder, lr in (("a", "0.01"), ("b", "0.01"), ("c", "0.02")):
        files[folder] = tmp_path / folder / "ncm.yaml"
        files[folder].parent.mkdir()
        files[folder].write_text(f"method: ncm\nbackbone: tiny-bert\ntrain: {{lr: {lr}}}\n")
    out = tmp_path / "sweep"

    def reopen(config):
        Sweep.from_args("run", str(config), ["seed=0,1"], out).open("here")

    reopen(files["a"])
    reopen(files["b"])
    record = json.loads((out / "sweep.json").read_text())
    assert [p["config"] for p in record["points"]] == [str(files["a"])] * 2
    assert len(record["commands"]) == 2
    with pytest.raises(UsageError, match="seed=0 was made with other settings"):
        reopen(files["c"])
    files["a"].unlink()
    with pytest.raises(UsageError, match=f"was made from {files['a']}, which no longer loads"):
        reopen(files["b"])


@pytest.mark.slow
def test_tune_chooses_on_val_and_reports_one_test_run(data_root, tmp_path, capsys, monkeypatch):
    """A linear probe on MiniLM features whose config's learning rate (1e-6) leaves it near
    chance: three trials over [0.01, 0.3] find a better one on the validation split."""
    monkeypatch.setenv("PROMPTCL_DATA", str(data_root))
    config = tmp_path / "poor.yaml"
    config.write_text(
        "method: linear\nbenchmark: clinc150\n"
        "data: {train_per_class: 2, test_per_class: 1}\n"
        "train: {epochs: 1, lr: 1.0e-6, progress: false}\n"
    )
    default = tmp_path / "default"
    main(["run", "--config", str(config), "--set", "data.eval_split=val", "--out", str(default)])
    out = tmp_path / "tune"
    args = ["tune", "run", "--config", str(config), "--range", "train.lr=0.01:0.3:log",
            "--trials", "3", "--out", str(out)]  # fmt: skip
    capsys.readouterr()
    main(args)
    said = capsys.readouterr().out
    record = json.loads((out / "tune.json").read_text())
    assert len(record["trials"]) == 3
    for trial in record["trials"]:
        assert metrics(out / trial["run"])["eval_split"] == "val"
        assert metrics(out / trial["run"])["faa"] == trial["val"]
    assert record["best"]["val"] == max(t["val"] for t in record["trials"])
    assert record["best"]["val"] > metrics(default)["faa"]
    final = metrics(out / "final")
    assert final["eval_split"] == "test" and record["final"]["test"] == final["faa"]
    lr = json.loads((out / "final" / "config.json").read_text())["train"]["lr"]
    assert lr == record["best"]["params"]["train.lr"]
    assert [line for line in said.splitlines() if "test" in line] == [
        f"test FAA of the best setting: {final['faa']:.2f} (the only test figure; run "
        f"directory: {out / 'final'})"
    ]
    # again: the study is complete, nothing runs, the same figure is reported
    main(args)
    again = capsys.readouterr().out
    assert "trial " not in again and f"best setting: {final['faa']:.2f}" in again
    assert sorted(os.listdir(out / "trials")) == ["000", "001", "002"]


@pytest.mark.slow
def test_tune_runs_a_trial_stopped_half_way_again_from_its_run(data_root, tmp_path, monkeypatch):
    """A trial left running (its process killed after the first task) is told failed and asked
    again with its values, in its run directory, which resumes."""
    import optuna

    monkeypatch.setenv("PROMPTCL_DATA", str(data_root))
    sets = ["method=linear", "backbone=tiny-bert", "benchmark=clinc150", "train.epochs=1",
            "data.train_per_class=1", "data.test_per_class=1", "train.progress=false"]  # fmt: skip
    out = tmp_path / "tune"
    tuning = Tuning.from_args("run", None, sets, ["train.lr=0.01:0.1:log"], out, 1, 0)
    tuning.open()
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(out / STUDY))
    )
    study = optuna.create_study(study_name=STUDY_NAME, storage=storage, direction="maximize")
    trial = study.ask({"train.lr": tuning.ranges[0].distribution()})
    trial.set_user_attr("run_dir", "trials/000")
    COMMANDS["run"].run(tuning.load(trial.params, "val"), out / "trials/000", stop_after=1)
    record = tuning.run(lambda line: None)
    (again,) = record["trials"]
    assert (again["number"], again["params"], again["run"]) == (1, trial.params, "trials/000")
    assert again["val"] == metrics(out / "trials/000")["faa"]
    assert len(metrics(out / "trials/000")["acc_matrix"]) == 10  # every task of clinc150
    states = [t.state.name for t in study.get_trials()]
    assert states == ["FAIL", "COMPLETE"]


def test_a_b2n_sweep_and_its_table(tmp_path, capsys):
    out = tmp_path / "b2n"
    sets = ["method=coop", "seed=0,1", "backbone=tiny-clip", "benchmark=random-images",
            "shots=2", "train.epochs=1", "train.progress=false"]  # fmt: skip
    main(["sweep", "b2n", *(a for item in sets for a in ("--set", item)), "--out", str(out)])
    main(["table", str(out)])
    lines = capsys.readouterr().out.splitlines()
    header = "| method | benchmark | seeds | base | novel | HM | trained params | train s |"
    row = next(line for line in lines if line.startswith("| coop"))
    hm = [metrics(out / f"seed={seed}")["hm"] for seed in (0, 1)]
    assert header in lines
    assert f"| {statistics.mean(hm):.2f} ± {statistics.stdev(hm):.2f} |" in row
