import json

import pytest
import torch
import torch.nn.functional as F

from promptcl import load_config, run
from promptcl.core.checkpoint import load_checkpoint, save_checkpoint
from promptcl.errors import UsageError
from promptcl.protocols.continual import Experiment

TIMING = ("train_seconds", "eval_seconds", "train_samples_per_s", "checkpoint_bytes")


def tiny(*overrides):
    """A tiny random BERT on the built-in intents; dualprompt unless a method is given."""
    base = [
        "backbone=tiny-bert",
        "data.train_per_class=4",
        "train.epochs=1",
        "train.batch_size=8",
        "train.progress=false",
    ]
    if not any(o.startswith("method=") for o in overrides):
        base += ["method=dualprompt", "tuner.g_blocks=[0]", "tuner.e_blocks=[1]"]
    return load_config(None, [*base, *overrides])


def without_timing(metrics):
    return {k: v for k, v in metrics.items() if k not in TIMING}


def test_run_directory_contents(tmp_path):
    metrics = run(tiny(), tmp_path / "run")
    files = {p.name for p in (tmp_path / "run").iterdir()}
    assert {"config.json", "class_order.json", "log.jsonl", "metrics.json"} <= files
    assert {"acc_matrix.png", "avg_acc.png", "checkpoint"} <= files
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved == json.loads(json.dumps(metrics))
    for key in (
        "method",
        "benchmark",
        "backbone",
        "seed",
        "acc_matrix",
        "faa",
        "caa",
        "fm",
        "bwt",
        "union_acc",
        "task_id_acc",
        "trainable_params",
        "train_seconds",
        "leaks_task_identity",
    ):
        assert key in saved
    T = saved["num_tasks"]
    assert [sum(v is not None for v in row) for row in saved["acc_matrix"]] == list(range(1, T + 1))
    assert saved["leaks_task_identity"] is False and saved["task_id_acc"] is not None
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [row["task"] for row in log] == list(range(T))
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["tuner"]["e_blocks"] == [1] and config["tuner"]["e_length"] == 5
    stored = {p.name for p in (tmp_path / "run" / "checkpoint").iterdir()}
    assert stored == {"tuner.safetensors"}  # tensors + state + checksum in one file
    assert not (tmp_path / "run" / ".lock").exists()  # released


RESUME_OPTIONS = {
    "dualprompt": ["tuner.g_blocks=[0]", "tuner.e_blocks=[1]"],
    "hash": [
        "tuner.blocks=[0,1]",
        "tuner.tii.epochs=1",
        "tuner.tii.align_epochs=1",
        "tuner.tap.epochs=1",
    ],
    "ranpac": ["tuner.dim=256"],
}


@pytest.mark.parametrize("method", ["dualprompt", "ncm", "l2p", "hash", "lda", "ranpac"])
def test_resumed_run_equals_unbroken_run(tmp_path, method):
    options = RESUME_OPTIONS.get(method, [])
    unbroken = run(tiny(f"method={method}", *options), tmp_path / "a")
    assert run(tiny(f"method={method}", *options), tmp_path / "b", stop_after=1) is None
    assert not (tmp_path / "b" / "metrics.json").exists()
    assert load_checkpoint(tmp_path / "b" / "checkpoint")[1].units_done == 1
    resumed = run(tiny(f"method={method}", *options), tmp_path / "b", resume=True)
    assert without_timing(resumed) == without_timing(unbroken)


def test_resume_with_another_config_is_refused(tmp_path):
    run(tiny(), tmp_path / "a", stop_after=1)
    with pytest.raises(UsageError, match="train.lr"):
        run(tiny("train.lr=0.5"), tmp_path / "a", resume=True)


def test_existing_directory_is_not_overwritten(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "keep.txt").write_text("x")
    with pytest.raises(UsageError, match="already exists"):
        run(tiny(), tmp_path / "a")


def test_joint_training_is_one_task_evaluated_on_all(tmp_path):
    metrics = run(tiny("train.joint=true"), tmp_path / "j")
    assert len(metrics["acc_matrix"]) == 1 and len(metrics["acc_matrix"][0]) == 4
    assert metrics["fm"] is None
    assert metrics["faa"] == pytest.approx(sum(metrics["acc_matrix"][0]) / 4)


def test_evaluation_batches_mix_tasks_and_training_masks_logits():
    exp = Experiment(tiny("train.eval_batch_size=16"))
    seen_batches, train_logits = [], []
    forward = exp.tuner.forward

    def recording(batch, task=None):
        out = forward(batch, task)
        if task is None:
            seen_batches.append({exp.sample_tasks["test"][i] for i in batch.index.tolist()})
        else:
            train_logits.append((task[0].item(), out.logits))
        return out

    exp.tuner.forward = recording
    for task in range(2):
        exp.tuner.begin_task(task, exp.stream.tasks[task])
        exp.train_task(task)
    exp.evaluate(2)
    assert any(len(tasks) > 1 for tasks in seen_batches)
    assert all(t == 1 for t, _ in train_logits[-2:])


def test_mask_logits_switch_changes_which_classes_compete(tmp_path, monkeypatch):
    captured = []
    real = torch.nn.functional.cross_entropy

    def spy(logits, labels, *a, **k):
        captured.append(torch.isinf(logits[0]).sum().item())
        return real(logits, labels, *a, **k)

    monkeypatch.setattr("promptcl.protocols.continual.F.cross_entropy", spy)
    run(tiny("method=linear"), tmp_path / "masked", stop_after=2)
    masked_last = captured[-1]
    captured.clear()
    run(tiny("method=linear", "train.mask_logits=false"), tmp_path / "open", stop_after=2)
    assert masked_last == 24 - 6  # task 2 of 4: only its 6 classes compete
    assert captured[-1] == 24 - 12  # every class seen so far competes


@pytest.mark.slow
def test_real_minilm_ncm_on_clinc150(tmp_path, data_root):
    config = load_config(
        None,
        [
            "method=ncm",
            "benchmark=clinc150",
            f"data.root={data_root}",
            "data.train_per_class=10",
            "data.test_per_class=5",
            "train.progress=false",
        ],
    )
    metrics = run(config, tmp_path / "ncm")
    # the frozen MiniLM's class means separate CLINC150's intents well even from 10 samples each
    assert metrics["faa"] > 75
    assert metrics["trainable_params"] == 0


def test_run_from_an_older_version_without_newer_keys_resumes(tmp_path):
    run(tiny(), tmp_path / "a", stop_after=1)
    path = tmp_path / "a" / "config.json"
    config = json.loads(path.read_text())
    del config["data"]["workers"], config["tuner"]["pull_coeff"]  # keys added later, defaults
    del config["kind"], config["promptcl_version"]  # recorded since 0.1.0, as fingerprints
    path.write_text(json.dumps(config))
    tensors, state = load_checkpoint(tmp_path / "a" / "checkpoint")
    state.fingerprint = None  # added later too
    save_checkpoint(tmp_path / "a" / "checkpoint", tensors, state)
    assert run(tiny(), tmp_path / "a", resume=True)["num_tasks"] == 4


def test_cached_queries_and_length_sorted_batches_change_no_figure(monkeypatch):
    """The evaluation's savings change no figure: the frozen test queries cached once per run
    (against computed per batch) and batches sorted by length (against the seeded shuffle
    alone) give the same accuracies, union and task-identity accuracy after every task."""
    exp = Experiment(tiny("train.eval_batch_size=8"))
    rows = {"cached": [], "per batch": [], "shuffled": []}
    for task in range(2):
        exp.tuner.begin_task(task, exp.stream.tasks[task])
        exp.train_task(task)
        rows["cached"].append(exp.evaluate(task + 1))
        sorted_chunks = exp.test_chunks(task + 1)
        cache = exp.caches.pop("test")
        rows["per batch"].append(exp.evaluate(task + 1))
        exp.caches["test"] = cache
        with monkeypatch.context() as patch:
            patch.setattr(exp.processors["test"], "length", lambda item: 0)
            assert exp.test_chunks(task + 1) != sorted_chunks
            rows["shuffled"].append(exp.evaluate(task + 1))
    assert rows["cached"] == rows["per batch"] == rows["shuffled"]
    assert rows["cached"][-1]["task_id_acc"] is not None


def test_float64_logits_reach_the_loss_unrounded():
    exp = Experiment(tiny("method=finetune"))
    exp.tuner.begin_task(0, exp.stream.tasks[0])
    exp.tuner.double()
    batch = next(exp.batches("train", exp.indices_of("train", [0]), 8))
    outside = torch.ones(exp.stream.num_classes, dtype=torch.bool)
    outside[list(exp.stream.tasks[0])] = False
    ce = exp.loss_terms(0, outside)((batch, 1.0))["ce"]
    logits = exp.tuner(batch, task=torch.zeros_like(batch.labels)).logits
    expected = F.cross_entropy(logits.masked_fill(outside, float("-inf")), batch.labels)
    assert logits.dtype == ce.dtype == torch.float64
    torch.testing.assert_close(ce, expected, atol=1e-15, rtol=0)


def test_batch_gradient_id_runs_on_task_pure_batches_and_is_flagged(tmp_path, monkeypatch):
    config = tiny(
        "method=softtf",
        "tuner.task_id=gradient-batch",
        "train.eval_batch_size=4",
    )
    exp = Experiment(config)
    purity = []
    original = exp.chunk_batches

    def spy(split, chunks):
        for batch in original(split, chunks):
            purity.append(len({exp.sample_tasks["test"][i] for i in batch.index.tolist()}))
            yield batch

    monkeypatch.setattr(exp, "chunk_batches", spy)
    exp.tuner.begin_task(0, exp.stream.tasks[0])
    exp.tuner.begin_task(1, exp.stream.tasks[1])
    result = exp.evaluate(2)
    assert purity and set(purity) == {1}  # every evaluation batch holds one task
    assert result["task_id_acc"] is not None
    metrics = run(config, tmp_path / "run")
    assert metrics["leaks_task_identity"] is True


def test_tasks_sharing_classes_are_trained_and_scored_by_data_set(tmp_path, data_root):
    config = tiny(
        "method=ncm",
        "benchmark=text4",
        f"data.root={data_root}",
        "data.train_per_class=3",
        "data.test_per_class=4",
    )
    exp = Experiment(config)
    yelp, amazon = 0, 3  # order 4: yelp, agnews, dbpedia, amazon
    assert exp.stream.tasks[yelp] == exp.stream.tasks[amazon]
    assert len(exp.indices_of("train", [amazon])) == 5 * 3
    metrics = run(config, tmp_path / "run")
    assert [len(row) for row in metrics["acc_matrix"]] == [4] * 4
    assert all(a is not None for a in metrics["acc_matrix"][3])


def test_run_files_are_strict_json():
    from promptcl.files import dumps

    assert dumps({"loss": float("nan"), "rows": [1.0, float("inf")]}) == (
        '{"loss": null, "rows": [1.0, null]}'
    )
