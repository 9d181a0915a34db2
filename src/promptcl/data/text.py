"""Text benchmarks (CLINC150, the built-in intents, CSV / JSON-lines files) and tokenisation."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from promptcl.config import StreamDataConfig
from promptcl.data.files import data_folder, read_csv, read_json
from promptcl.data.stream import (
    TaskStream,
    build_stream,
    build_stream_from_tasks,
    evaluation_pairs,
    hold_out,
    split_into_tasks,
)
from promptcl.errors import UsageError
from promptcl.files import read_text

BUILTIN_INTENTS = Path(__file__).parent / "builtin" / "everyday_intents.json"


def _pairs(rows: Any, path: Path, key: str) -> list[tuple[str, str]]:
    ok = isinstance(rows, list) and all(
        isinstance(r, list) and len(r) == 2 and all(isinstance(v, str) for v in r) for r in rows
    )
    if not ok:
        raise UsageError(f"{path}: '{key}' must be a list of [text, label] pairs")
    return [(text, label) for text, label in rows]


def _splits(data: Any, path: Path, eval_split: str) -> tuple[list, list]:
    if not isinstance(data, dict) or "train" not in data or eval_split not in data:
        raise UsageError(
            f"{path} lacks the 'train' or '{eval_split}' list; "
            + ("set data.eval_split=test" if eval_split != "test" else "check the file")
        )
    return _pairs(data["train"], path, "train"), _pairs(data[eval_split], path, eval_split)


@dataclass
class Clinc150:
    """CLINC150's files: data_full.json's training and evaluation [text, intent] pairs in file
    order, out-of-scope ("oos") queries included, and domains.json (domain -> its intents;
    empty when not read)."""

    train: list[tuple[str, str]]
    test: list[tuple[str, str]]
    domains: dict[str, list[str]]


def read_clinc150(root: str | None, benchmark: str, split: str, domains: bool) -> Clinc150:
    """The one reader of CLINC150 (``root/clinc150``), for ``benchmark``: data_full.json's train
    and ``split`` lists and, with ``domains``, domains.json, each checked."""
    folder = data_folder(root, benchmark, "clinc150", "data_full.json and domains.json")
    by_domain = read_json(folder / "domains.json") if domains else {}
    if not isinstance(by_domain, dict) or not all(isinstance(v, list) for v in by_domain.values()):
        raise UsageError(f"{folder / 'domains.json'} must map each domain to a list of intents")
    path = folder / "data_full.json"
    train, test = _splits(read_json(path), path, split)
    return Clinc150(train, test, by_domain)


def clinc150(cfg: StreamDataConfig, seed: int, per_domain: bool) -> TaskStream:
    """CLINC150 without out-of-scope queries. per_domain: 10 tasks = the 10 domains in a seeded
    order; otherwise 15 tasks of 10 intents in a seeded order."""
    name = "clinc150" if per_domain else "clinc150-15"
    files = read_clinc150(cfg.root, name, cfg.eval_split, domains=True)
    domains = files.domains
    if per_domain:
        order = sorted(domains)
        random.Random(seed).shuffle(order)
        tasks = [sorted(domains[d]) for d in order]
    else:
        tasks = split_into_tasks([i for v in domains.values() for i in v], 15, seed)
    return build_stream(
        name,
        files.train,
        files.test,
        tasks,
        cfg.train_per_class,
        seed,
        test_per_class=cfg.test_per_class,
    )


def builtin_intents(cfg: StreamDataConfig, seed: int) -> TaskStream:
    """24 everyday intents written for promptcl (20 train / 5 test each), 4 tasks by default."""
    if cfg.eval_split != "test":
        raise UsageError("builtin-intents has no validation split; set data.eval_split=test")
    train, test = _splits(read_json(BUILTIN_INTENTS), BUILTIN_INTENTS, "test")
    tasks = split_into_tasks(sorted({label for _, label in train}), cfg.num_tasks or 4, seed)
    return build_stream(
        "builtin-intents",
        train,
        test,
        tasks,
        cfg.train_per_class,
        seed,
        test_per_class=cfg.test_per_class,
    )


# de Masson d'Autume et al. (2019)'s orders i-iv, numbered 4-7 by IDBR, SLM and Soft-TF, with
# Yahoo Answers (not available here) left out
TEXT4_ORDERS = {
    4: ["yelp", "agnews", "dbpedia", "amazon"],
    5: ["dbpedia", "agnews", "amazon", "yelp"],
    6: ["yelp", "amazon", "dbpedia", "agnews"],
    7: ["agnews", "yelp", "amazon", "dbpedia"],
}


def text4(cfg: StreamDataConfig, seed: int) -> TaskStream:
    """AG News, Yelp, Amazon, DBpedia: one task per data set, in ``data.order``. Yelp and Amazon
    share the five star classes. The files lack two splits: Yelp's test set is 20% of its
    training file, DBpedia's training set half of its test file, cut per class with a fixed
    seed. ``data.eval_split=val`` holds out 10% of each training set (per class, fixed seed)
    and evaluates on it."""
    root = data_folder(
        cfg.root, "text4", "text4", "agnews/, yelp/, amazon/ and dbpedia/ with their JSON files"
    )
    if cfg.order not in TEXT4_ORDERS:
        raise UsageError(f"data.order must be one of {sorted(TEXT4_ORDERS)}, not {cfg.order}")
    if cfg.eval_split not in ("test", "val"):
        raise UsageError("data.eval_split must be test or val")
    tasks = [text4_splits(root / name, cfg.eval_split) for name in TEXT4_ORDERS[cfg.order]]
    return build_stream_from_tasks(
        "text4", tasks, cfg.train_per_class, seed, test_per_class=cfg.test_per_class
    )


def text4_splits(folder: Path, eval_split: str) -> tuple[list, list]:
    """One text4 data set's (sentence, label) pairs: (training, evaluation). A missing test
    file is a fifth of the training file, a missing training file half of the test file (per
    class, fixed seed); ``eval_split`` val holds out 10% of the training pairs and evaluates
    on them. Shared by the text4 stream and the dbpedia base-to-novel benchmark."""
    train, test = _text4_files(folder)
    return evaluation_pairs(train, eval_split, lambda: test, str(folder))


def _text4_files(folder: Path) -> tuple[list, list]:
    files = {split: folder / f"{split}.json" for split in ("train", "test")}
    found = {split: _text4_rows(path) for split, path in files.items() if path.is_file()}
    if not found:
        raise UsageError(f"{folder} holds neither train.json nor test.json; check data.root")
    if "train" not in found:  # DBpedia: half of the test file trains
        found["test"], found["train"] = hold_out(found["test"], 0.5)
    elif "test" not in found:  # Yelp: a fifth of the training file tests
        found["train"], found["test"] = hold_out(found["train"], 0.2)
    return found["train"], found["test"]


def _text4_rows(path: Path) -> list[tuple[str, str]]:
    rows = read_json(path)
    ok = isinstance(rows, list) and all(
        isinstance(r, dict)
        and isinstance(r.get("sentence"), str)
        and isinstance(r.get("label"), str)
        for r in rows
    )
    if not ok:
        raise UsageError(f'{path} must be a list of {{"label": str, "sentence": str}}')
    return [(r["sentence"], r["label"]) for r in rows]


def _resolve(cfg: StreamDataConfig, file: str | None, key: str, benchmark: str) -> Path:
    if file is None:
        raise UsageError(f"benchmark {benchmark} needs data.{key}=FILE")
    path = Path(file).expanduser()
    if not path.is_absolute() and not path.is_file() and cfg.root is not None:
        path = Path(cfg.root).expanduser() / path
    if not path.is_file():
        raise UsageError(f"data.{key} {file} not found; pass an existing file")
    return path


def _read_csv(path: Path, text: str, label: str) -> list[tuple[str, ...]]:
    hint = "set data.text_column and data.label_column"
    return read_csv(path, (text, label), hint, "pass it with --set benchmark=text-jsonl")


def _read_jsonl(path: Path, text: str, label: str) -> list[tuple[str, str]]:
    rows = []
    for n, line in enumerate(read_text(path).splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            rows.append((str(row[text]), str(row[label])))
        except (json.JSONDecodeError, KeyError, TypeError):
            raise UsageError(
                f"{path} line {n} is not a JSON object with keys {text!r} and {label!r}; "
                "set data.text_column and data.label_column or fix the file"
            ) from None
    return rows


def text_file_stream(cfg: StreamDataConfig, seed: int, kind: str) -> TaskStream:
    """Generic labelled text files, one row per sample; classes split into data.num_tasks.
    ``data.eval_split=val`` holds out VAL_FRACTION of each class's training rows (fixed seed)
    and evaluates on them: the test file is not read then."""
    name = f"text-{kind}"
    read = _read_csv if kind == "csv" else _read_jsonl
    train_path = _resolve(cfg, cfg.train_file, "train_file", name)
    test_path = _resolve(cfg, cfg.test_file, "test_file", name)
    train, test = evaluation_pairs(
        read(train_path, cfg.text_column, cfg.label_column),
        cfg.eval_split,
        lambda: read(test_path, cfg.text_column, cfg.label_column),
        str(train_path),
    )
    if not train or not test:
        raise UsageError(f"{train_path if not train else test_path} holds no samples")
    return topic_stream(name, cfg, seed, train, test, default_tasks=5)


def topic_stream(
    name: str, cfg: StreamDataConfig, seed: int, train: list, test: list, default_tasks: int
) -> TaskStream:
    """The classes of ``train`` shuffled with ``seed`` and cut into data.num_tasks tasks
    (``default_tasks`` when unset)."""
    tasks = split_into_tasks(
        sorted({label for _, label in train}), cfg.num_tasks or default_tasks, seed
    )
    return build_stream(
        name, train, test, tasks, cfg.train_per_class, seed, test_per_class=cfg.test_per_class
    )


def dbpedia(cfg: StreamDataConfig, seed: int) -> TaskStream:
    """DBpedia's 14 topics from text4/dbpedia, cut as the text4 stream cuts them (half of the
    test file trains; ``data.eval_split=val`` holds out VAL_FRACTION of that half), in
    data.num_tasks tasks (7 of 2 topics by default) in an order seeded by the run seed."""
    train, test = dbpedia_splits(cfg.root, cfg.eval_split)
    return topic_stream("dbpedia", cfg, seed, train, test, default_tasks=7)


def dbpedia_splits(root: str | None, eval_split: str) -> tuple[list, list]:
    """DBpedia's (sentence, topic) pairs under ``root``/text4/dbpedia, cut by ``text4_splits``:
    (training, evaluation); shared by the dbpedia stream and its base-to-novel loader."""
    holds = "test.json and labels.json of text4's DBpedia"
    folder = data_folder(root, "dbpedia", "text4/dbpedia", holds, ("test.json",))
    return text4_splits(folder, eval_split)


class TextProcessor:
    """Tokenises once up front; pads each batch to its own longest sequence (dynamic padding)."""

    augments = False  # the same text gives the same tokens: features can be cached

    def __init__(self, tokenizer, max_length: int) -> None:
        self.tokenizer = tokenizer
        self.max_length = max_length

    def prepare(self, texts: list[str]) -> list[list[int]]:
        if not texts:  # a loaded run's splits hold no samples (the tokenizer fails on none)
            return []
        for n, text in enumerate(texts, 1):
            try:
                text.encode("utf-8")
            except UnicodeEncodeError as err:  # a lone surrogate: bytes or JSON "\ud800" escapes
                raise UsageError(
                    f"text {n} ({text[:40]!r}) is not valid Unicode: character {err.start} is a "
                    "lone surrogate; pass UTF-8 text"
                ) from None
        return self.tokenizer(texts, truncation=True, max_length=self.max_length)["input_ids"]

    def collate(self, items: list[list[int]]) -> dict[str, torch.Tensor]:
        return pad_ids(self.tokenizer, items)

    def length(self, item: list[int]) -> int:
        """The positions a sample fills in a batch (what padding is computed over)."""
        return len(item)


def pad_ids(tokenizer, rows: list[list[int]]) -> dict[str, torch.Tensor]:
    """Token id rows -> ``input_ids`` and ``attention_mask`` (B, longest row), padded on the
    right with the tokenizer's pad token."""
    batch = tokenizer.pad(
        {"input_ids": rows}, padding_side="right", return_attention_mask=True, return_tensors="pt"
    )
    return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
