"""The dbpedia benchmark: DBpedia's 14 topics cut as the text4 stream cuts them, for
base-to-novel and as a stream of seeded tasks."""

from pathlib import Path

import pytest

from promptcl.config import StreamDataConfig
from promptcl.data import build_benchmark, load_labelled, protocols
from promptcl.data.labelled import TOPIC_TEMPLATE, base_novel
from promptcl.errors import UsageError


@pytest.fixture(scope="module")
def root(data_root: Path) -> str:
    if not (data_root / "text4" / "dbpedia" / "test.json").is_file():
        pytest.skip(f"no text4/dbpedia under {data_root}")
    return str(data_root)


def pairs(samples, classnames):
    return sorted((text, classnames[c]) for text, c in samples)


def test_split_sizes_and_disjoint_seeded_base_novel(root):
    data = load_labelled("dbpedia", root, "test", None)
    assert len(data.classnames) == 14 and "Educational Institution" in data.classnames
    assert data.template == TOPIC_TEMPLATE and protocols("dbpedia") == ["run", "b2n"]
    assert len(data.train) + len(data.test) == 7600  # the test file, halved per class
    assert abs(len(data.train) - len(data.test)) <= 14
    assert not {t for t, _ in data.train} & {t for t, _ in data.test}
    base, novel = base_novel(data.class_order(0))
    assert len(base) == len(novel) == 7 and not set(base) & set(novel)
    assert set(base) | set(novel) == set(range(14))
    assert data.class_order(0) == data.class_order(0) != data.class_order(1)
    val = load_labelled("dbpedia", root, "val", None)
    assert len(val.train) + len(val.test) == len(data.train)
    assert round(len(val.test) / len(data.train), 2) == 0.1
    assert set(pairs(val.train + val.test, val.classnames)) == set(
        pairs(data.train, data.classnames)
    )


@pytest.mark.parametrize("split", ["test", "val"])
def test_cut_equals_the_text4_streams_dbpedia_task(root, split):
    data = load_labelled("dbpedia", root, split, None)
    stream = build_benchmark("text4", StreamDataConfig(root=root, order=5, eval_split=split), 0)
    task = 0  # order 5 starts with DBpedia

    def stream_pairs(part):
        return sorted(
            (item, stream.class_names[y])
            for item, y, t in zip(part.items, part.labels, part.tasks, strict=True)
            if t == task
        )

    assert pairs(data.train, data.classnames) == stream_pairs(stream.train)
    assert pairs(data.test, data.classnames) == stream_pairs(stream.test)


def test_missing_dbpedia_is_a_one_line_error(tmp_path):
    with pytest.raises(UsageError, match="text4/dbpedia") as err:
        load_labelled("dbpedia", str(tmp_path), "test", None)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("split", ["test", "val"])
def test_stream_is_the_b2n_cut_in_seeded_tasks_of_two(root, split):
    data = load_labelled("dbpedia", root, split, None)
    stream = build_benchmark("dbpedia", StreamDataConfig(root=root, eval_split=split), 0)
    assert stream.num_tasks == 7 and [len(t) for t in stream.tasks] == [2] * 7
    assert sorted(c for t in stream.tasks for c in t) == list(range(14))
    for part, samples in ((stream.train, data.train), (stream.test, data.test)):
        got = sorted(
            (item, stream.class_names[y]) for item, y in zip(part.items, part.labels, strict=True)
        )
        assert got == pairs(samples, data.classnames)
        # a sample's task is its class's
        assert all(y in stream.tasks[t] for y, t in zip(part.labels, part.tasks, strict=True))
    other = build_benchmark("dbpedia", StreamDataConfig(root=root, eval_split=split), 1)
    names = [[stream.class_names[c] for c in t] for t in stream.tasks]
    assert names != [[other.class_names[c] for c in t] for t in other.tasks]
    five = build_benchmark("dbpedia", StreamDataConfig(root=root, num_tasks=5), 0)
    assert sorted(len(t) for t in five.tasks) == [2, 3, 3, 3, 3]
