"""train.logger=wandb and mlflow: offline (a W&B offline run) and a local MLflow file store get
the same series as the CSV logger, the run's config and its final figures; a logger whose
package is missing is a one-line error naming the extra."""

import json
import struct
import sys

import pytest

from promptcl.cli import main
from promptcl.protocols.continual import load_config, run

TINY = [
    "backbone=tiny-bert",
    "method=dualprompt",
    "data.train_per_class=6",
    "train.epochs=1",
    "train.batch_size=8",
    "train.progress=false",
]


def log_rows(out):
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


def wandb_records(path):
    """The records of a W&B offline run file (a LevelDB log: 32 KiB blocks of chunks with a
    7-byte header: crc32, length, type; a record ends with a FULL (1) or LAST (4) chunk)."""
    from wandb.proto import wandb_internal_pb2

    data, records, parts, pos = path.read_bytes(), [], b"", 7  # after the file header
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:  # a block's tail too short for a header is padding
            pos += 32768 - pos % 32768
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        parts += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(parts)
            records.append(record)
            parts = b""
    return records


def items(entries):
    """Key -> value of W&B record items (a key is ``key``, or ``nested_key``'s parts)."""
    return {e.key or "/".join(e.nested_key): json.loads(e.value_json) for e in entries}


def test_wandb_offline_run_holds_the_series_config_and_final_figures(tmp_path, monkeypatch):
    pytest.importorskip("wandb", reason="the wandb extra is not installed")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    # wandb gives up on a busy machine after 90 s (init) / 30 s (its service): CI shares 2 cores
    monkeypatch.setenv("WANDB_INIT_TIMEOUT", "600")
    monkeypatch.setenv("WANDB__SERVICE_WAIT", "600")
    out = tmp_path / "run"
    metrics = run(load_config(None, [*TINY, "train.logger=wandb"]), out)
    (path,) = (out / "logs" / "wandb").glob("offline-run-*/run-*.wandb")
    config, history = {}, []
    for record in wandb_records(path):
        kind = record.WhichOneof("record_type")
        if kind == "config":
            config.update(items(record.config.update))
        elif kind == "history":
            history.append(items(record.history.item))
    assert config["method"] == "dualprompt" and config["train"]["batch_size"] == 8
    last = history[-1]["_step"]  # the final figures come at the last optimisation step
    assert [row["_step"] for row in history if "ce" in row] == list(range(1, last + 1))
    task_rows = [row for row in history if "avg_acc" in row]
    assert [row["avg_acc"] for row in task_rows] == pytest.approx(
        [row["avg_acc"] for row in log_rows(out)]
    )
    final = {k: v for k, v in history[-1].items() if k.startswith("final/")}
    assert final["final/faa"] == pytest.approx(metrics["faa"])
    assert final["final/trainable_params"] == metrics["trainable_params"]


def test_mlflow_file_store_holds_the_series_config_and_final_figures(tmp_path, monkeypatch):
    pytest.importorskip("mlflow", reason="the mlflow extra is not installed")
    store = tmp_path / "mlruns"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store.as_uri())
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "loggers-test")
    out = tmp_path / "run"
    metrics = run(load_config(None, [*TINY, "train.logger=mlflow"]), out)
    (folder,) = [p.parent for p in store.glob("*/*/meta.yaml")]  # the one run
    assert (folder / "tags" / "mlflow.runName").read_text() == "run"
    params = {p.name: p.read_text() for p in (folder / "params").iterdir()}
    assert params["method"] == "dualprompt" and params["train.batch_size"] == "8"

    def series(name):  # lines "timestamp value step"
        lines = (folder / "metrics" / name).read_text().splitlines()
        return [(float(v), int(s)) for _, v, s in (line.split() for line in lines)]

    last = series("final/faa")[0][1]
    assert [s for _, s in series("ce")] == list(range(1, last + 1))
    assert [v for v, _ in series("avg_acc")] == pytest.approx(
        [row["avg_acc"] for row in log_rows(out)]
    )
    assert series("final/faa") == [(pytest.approx(metrics["faa"]), last)]
    meta = (folder / "meta.yaml").read_text()
    assert "status: 3" in meta  # RunStatus.FINISHED


@pytest.mark.parametrize("kind", ["wandb", "mlflow"])
def test_a_missing_logger_package_names_its_extra(kind, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, kind, None)  # import fails as if not installed
    monkeypatch.setitem(sys.modules, f"{kind}.tracking", None)
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as err:
        main(["run", *[a for o in [*TINY, f"train.logger={kind}"] for a in ("--set", o)],
              "--out", str(out)])  # fmt: skip
    assert err.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == [
        f"promptcl: error: train.logger={kind} needs its package: pip install 'promptcl[{kind}]'"
    ]
    assert not out.exists()


def test_final_figures_are_the_numbers_of_metrics_json_by_path():
    from promptcl.loggers import final_figures, flat

    metrics = {"faa": 91.5, "fm": None, "trainable_params": 12, "leaks_task_identity": False,
               "acc_matrix": [[90.0]], "method": "hash", "transfer": {"hwu64": 70.25}}  # fmt: skip
    assert final_figures(metrics) == {
        "final/faa": 91.5,
        "final/trainable_params": 12.0,
        "final/transfer/hwu64": 70.25,
    }
    assert flat({"train": {"lr": 0.1, "tii": {"epochs": 2}}, "seed": 0}, ".") == {
        "train.lr": 0.1,
        "train.tii.epochs": 2,
        "seed": 0,
    }
