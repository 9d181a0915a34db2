import json

import pytest
import torch

from promptcl.backbones.hf import packaged_model_dir
from promptcl.config import StreamDataConfig
from promptcl.data import TextProcessor, build_benchmark
from promptcl.errors import UsageError


def check_stream(stream, num_tasks, classes_per_task):
    assert stream.num_tasks == num_tasks
    assert [len(t) for t in stream.tasks] == classes_per_task
    flat = [c for t in stream.tasks for c in t]
    assert flat == list(range(stream.num_classes))  # disjoint, numbered in task order
    assert set(stream.train.labels) == set(flat) == set(stream.test.labels)


def test_builtin_intents():
    stream = build_benchmark("builtin-intents", StreamDataConfig(), seed=0)
    check_stream(stream, 4, [6, 6, 6, 6])
    assert len(stream.train) == 24 * 20 and len(stream.test) == 24 * 5
    again = build_benchmark("builtin-intents", StreamDataConfig(), seed=0)
    other = build_benchmark("builtin-intents", StreamDataConfig(), seed=1)
    assert again.class_names == stream.class_names != other.class_names


def test_clinc150_domains(data_root):
    stream = build_benchmark("clinc150", StreamDataConfig(root=str(data_root)), seed=0)
    check_stream(stream, 10, [15] * 10)
    domains = json.loads((data_root / "clinc150" / "domains.json").read_text())
    tasks = stream.describe()["tasks"]
    assert sorted(map(sorted, tasks)) == sorted(map(sorted, domains.values()))
    assert len(stream.train) == 150 * 100 and len(stream.test) == 150 * 30


def test_clinc150_15_with_cap_and_val(data_root):
    cfg = StreamDataConfig(root=str(data_root), train_per_class=7, eval_split="val")
    stream = build_benchmark("clinc150-15", cfg, seed=3)
    check_stream(stream, 15, [10] * 15)
    assert len(stream.train) == 150 * 7 and len(stream.test) == 150 * 20


def test_missing_root_and_folder(tmp_path):
    with pytest.raises(UsageError, match="needs a data root"):
        build_benchmark("clinc150", StreamDataConfig(), seed=0)
    with pytest.raises(UsageError, match="not found"):
        build_benchmark("clinc150", StreamDataConfig(root=str(tmp_path)), seed=0)


def test_wrong_format(tmp_path):
    folder = tmp_path / "clinc150"
    folder.mkdir()
    (folder / "domains.json").write_text('{"a": ["x", "y"]}')
    (folder / "data_full.json").write_text('{"train": [{"text": "hi"}], "test": []}')
    with pytest.raises(UsageError, match="list of \\[text, label\\] pairs"):
        build_benchmark("clinc150", StreamDataConfig(root=str(tmp_path)), seed=0)
    (folder / "data_full.json").write_text("not json")
    with pytest.raises(UsageError, match="not valid JSON"):
        build_benchmark("clinc150", StreamDataConfig(root=str(tmp_path)), seed=0)


def test_csv_and_jsonl(tmp_path):
    rows = [(f"text {i} of {c}", c) for c in "abcdef" for i in range(3)]
    (tmp_path / "train.csv").write_text("text,label\n" + "".join(f"{t},{c}\n" for t, c in rows))
    (tmp_path / "test.jsonl").write_text(
        "".join(json.dumps({"utterance": t, "intent": c}) + "\n" for t, c in rows)
    )
    (tmp_path / "train.jsonl").write_text(
        "".join(json.dumps({"utterance": t, "intent": c}) + "\n" for t, c in rows)
    )
    cfg = StreamDataConfig(
        root=str(tmp_path), train_file="train.csv", test_file="train.csv", num_tasks=3
    )
    check_stream(build_benchmark("text-csv", cfg, 0), 3, [2, 2, 2])
    cfg = StreamDataConfig(
        root=str(tmp_path),
        train_file="train.jsonl",
        test_file="test.jsonl",
        num_tasks=2,
        text_column="utterance",
        label_column="intent",
    )
    check_stream(build_benchmark("text-jsonl", cfg, 0), 2, [3, 3])
    with pytest.raises(UsageError, match="text_column"):
        cfg.text_column = "text"
        build_benchmark("text-jsonl", cfg, 0)
    # the validation split: 10 % of each class's training rows, held out with a fixed seed;
    # the test file is not read (a broken one does not matter)
    (tmp_path / "broken.csv").write_text("nothing,here\n")
    rows = [(f"text {i} of {c}", c) for c in "abcdef" for i in range(20)]
    (tmp_path / "big.csv").write_text("text,label\n" + "".join(f"{t},{c}\n" for t, c in rows))
    cfg = StreamDataConfig(
        root=str(tmp_path), train_file="big.csv", test_file="broken.csv", eval_split="val"
    )
    val = build_benchmark("text-csv", cfg, 0)
    assert len(val.train.items) == 108 and len(val.test.items) == 12
    assert sorted(val.train.items + val.test.items) == sorted(t for t, _ in rows)
    assert sorted(val.test.labels) == sorted(val.train.labels)[::9]  # 2 of each class held out
    assert build_benchmark("text-csv", cfg, 1).test.items == val.test.items  # not the run seed's
    with pytest.raises(UsageError, match="no columns"):
        cfg.eval_split = "test"
        build_benchmark("text-csv", cfg, 0)
    with pytest.raises(UsageError, match="no columns"):
        bad = StreamDataConfig(
            root=str(tmp_path), train_file="train.csv", test_file="train.csv", label_column="intent"
        )
        build_benchmark("text-csv", bad, 0)


def tokenizer_of(kind: str):
    """MiniLM's WordPiece tokenizer, or CLIP's BPE one over a four-token vocabulary (its pad
    token is <|endoftext|>)."""
    from transformers import AutoTokenizer, CLIPTokenizer

    if kind == "bert":
        return AutoTokenizer.from_pretrained(str(packaged_model_dir("minilm-l6")))
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1, "a</w>": 2, "b</w>": 3}
    return CLIPTokenizer(vocab=vocab, merges=[])


@pytest.mark.parametrize("kind", ["bert", "clip"])
def test_dynamic_padding(kind):
    """A batch is padded on the right to its longest row with the tokenizer's pad token, also
    when the tokenizer would pad on the left."""
    tokenizer = tokenizer_of(kind)
    tokenizer.padding_side = "left"
    proc = TextProcessor(tokenizer, max_length=4)
    items = proc.prepare(["a b", "a b a b a b", "a"])
    assert [len(i) for i in items] == [4, 4, 3]
    batch = proc.collate([items[0], items[2]])
    pad = tokenizer.pad_token_id
    assert batch["input_ids"].dtype == batch["attention_mask"].dtype == torch.long
    assert batch["input_ids"].tolist() == [items[0], items[2] + [pad]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 1, 0]]


def test_text4_shares_the_star_classes_between_yelp_and_amazon(data_root):
    stream = build_benchmark("text4", StreamDataConfig(root=str(data_root), test_per_class=5), 0)
    assert stream.num_tasks == 4 and stream.num_classes == 5 + 4 + 14
    yelp, agnews, dbpedia, amazon = stream.tasks  # order 4
    assert yelp == amazon and len(agnews) == 4 and len(dbpedia) == 14
    assert {stream.class_names[c] for c in yelp} == {
        "very negative",
        "negative",
        "neutral",
        "positive",
        "very positive",
    }
    # every sample carries its data set; Yelp's test set and DBpedia's training set are cut off
    # with a fixed seed, the same for every run seed
    assert sorted(set(stream.test.tasks)) == [0, 1, 2, 3]
    assert all(stream.test.tasks.count(t) == 5 * len(c) for t, c in enumerate(stream.tasks))
    other = build_benchmark("text4", StreamDataConfig(root=str(data_root), test_per_class=5), 1)
    yelp_test = {x for x, t in zip(stream.test.items, stream.test.tasks, strict=True) if t == 0}
    yelp_train = {x for x, t in zip(other.train.items, other.train.tasks, strict=True) if t == 0}
    assert not yelp_test & yelp_train
    reordered = build_benchmark("text4", StreamDataConfig(root=str(data_root), order=7), 0)
    assert [len(t) for t in reordered.tasks] == [4, 5, 5, 14]
    with pytest.raises(UsageError, match="data.order"):
        build_benchmark("text4", StreamDataConfig(root=str(data_root), order=1), 0)
