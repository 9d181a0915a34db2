"""ONE registry of benchmarks by name for every command. An entry serves ``promptcl run`` when
it has a ``stream`` builder (StreamDataConfig, seed -> TaskStream) and ``promptcl b2n`` when it
has a ``labelled`` loader (data root, evaluation split, template or None -> LabelledData); a
data set that serves both (clinc150) is one entry with both."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

from promptcl.config import StreamDataConfig
from promptcl.data import labelled
from promptcl.data.labelled import LabelledData
from promptcl.data.stream import Split, TaskStream, build_stream, split_into_tasks
from promptcl.data.text import (
    TextProcessor,
    builtin_intents,
    clinc150,
    dbpedia,
    text4,
    text_file_stream,
)
from promptcl.data.vision import (
    ImageProcessor,
    cifar100,
    cub200,
    fashion_mnist,
    image_folder,
    imagenet_r,
    tinyimagenet,
)
from promptcl.errors import UsageError
from promptcl.registry import Registry

StreamBuilder = Callable[[StreamDataConfig, int], TaskStream]
LabelledLoader = Callable[[str | None, str, str | None], LabelledData]

# data keys that only some streams read, and which of them each stream reads: a key set for a
# benchmark that ignores it is refused (data.num_tasks on a fixed split, say)
OWN_KEYS = ("num_tasks", "order", "train_file", "test_file", "text_column", "label_column")
FILE_KEYS = ("num_tasks", "train_file", "test_file", "text_column", "label_column")
# the command each protocol runs under, and what a benchmark of it is called in messages
PROTOCOLS = {"run": "benchmark", "b2n": "base-to-novel benchmark"}


@dataclass(frozen=True)
class Benchmark:
    """A registered benchmark: what builds its data for each command it serves."""

    stream: StreamBuilder | None = None  # promptcl run: the task stream
    labelled: LabelledLoader | None = None  # promptcl b2n: the labelled classes
    reads: tuple[str, ...] = ()  # the keys of OWN_KEYS that ``stream`` reads
    license: str | None = None  # the data's licence (a Hub licence id), when known

    @property
    def protocols(self) -> list[str]:
        """The commands this benchmark serves: run, b2n or both."""
        return [p for p, f in (("run", self.stream), ("b2n", self.labelled)) if f is not None]


BENCHMARKS: Registry[Benchmark] = Registry(
    "benchmark",
    {"coop:NAME": "an image data set of the CoOp protocol under data.root (CLIP)"},
)
PATTERN_PROTOCOLS = {"coop:NAME": ["b2n"]}  # the commands a name pattern serves


def register_benchmark(
    name: str,
    description: str,
    stream: StreamBuilder | None = None,
    labelled: LabelledLoader | None = None,
    reads: Sequence[str] = ("num_tasks",),
    license: str | None = None,
) -> None:
    """``reads``: the keys of OWN_KEYS that ``stream`` reads; give ``stream``, ``labelled`` or
    both; ``license``: the data's licence, when known (model cards name it)."""
    if stream is None and labelled is None:
        raise ValueError(f"benchmark {name!r} needs a stream builder or a labelled loader")
    entry = Benchmark(stream, labelled, tuple(reads) if stream else (), license)
    BENCHMARKS.add(name, entry, description)


register_benchmark(
    "builtin-intents",
    "24 everyday intents shipped with promptcl, 4 tasks (no data root)",
    builtin_intents,
    license="apache-2.0",
)
register_benchmark(
    "clinc150",
    "CLINC150 without out-of-scope queries; run: 10 tasks = its 10 domains (15 intents each), "
    "seeded domain order; b2n: its 150 intents, 75 base + 75 novel",
    partial(clinc150, per_domain=True),
    labelled.clinc150,
    (),
    license="cc-by-3.0",
)
register_benchmark(
    "clinc150-15",
    "CLINC150: 15 tasks of 10 intents in a seeded order",
    partial(clinc150, per_domain=False),
    reads=(),
    license="cc-by-3.0",
)
register_benchmark(
    "text4",
    "AG News, Yelp, Amazon, DBpedia: 4 tasks, one per data set (data.order 4-7); Yelp and "
    "Amazon share the 5 star classes",
    text4,
    reads=("order",),
)
register_benchmark(
    "text-csv",
    "CSV files data.train_file/test_file with text and label columns",
    partial(text_file_stream, kind="csv"),
    reads=FILE_KEYS,
)
register_benchmark(
    "text-jsonl",
    "JSON-lines files data.train_file/test_file with text and label keys",
    partial(text_file_stream, kind="jsonl"),
    reads=FILE_KEYS,
)
register_benchmark(
    "cifar100",
    "CIFAR-100 python-version files: 10 tasks (data.num_tasks=20 for 20); seed 0 = label order",
    cifar100,
)
register_benchmark(
    "imagenet-r",
    "ImageNet-R (200 classes), fixed 80/20 split per class, 10 seeded tasks",
    imagenet_r,
)
register_benchmark(
    "cub200", "CUB-200-2011 with its official train/test split, 10 seeded tasks", cub200
)
register_benchmark(
    "tinyimagenet", "Tiny ImageNet (200 classes; val = test), 10 seeded tasks", tinyimagenet
)
register_benchmark(
    "fashion-mnist",
    "Fashion-MNIST IDX files (data.root or the Debian package), 5 tasks of 2",
    fashion_mnist,
    license="mit",
)
register_benchmark(
    "imagefolder",
    "your images: data.root holds train/<class>/ and test/<class>/ folders",
    image_folder,
)
register_benchmark(
    "dbpedia",
    "DBpedia's 14 topics from text4/dbpedia, cut as the text4 stream cuts them (half of the test "
    "file trains); run: 7 seeded tasks of 2 topics; b2n: 7 base + 7 novel",
    dbpedia,
    labelled.dbpedia,
    license="cc-by-sa-3.0",
)
# base-to-novel only: intents without a task split, and images for tests
register_benchmark(
    "banking77",
    "your Banking77 CSVs: data.root/banking77/{train,test}.csv",
    labelled=labelled.banking77,
)
register_benchmark(
    "hwu64", "your HWU64: data.root/hwu64/{train,test}/{seq.in,label}", labelled=labelled.hwu64
)
register_benchmark(
    "random-images", "8 classes of random 32 px images: tests", labelled=labelled.random_images
)


def data_license(name: str) -> str | None:
    """The licence of benchmark ``name``'s data, when known."""
    return BENCHMARKS.get(name).license if name in BENCHMARKS else None


def protocols(name: str) -> list[str]:
    """The commands that benchmark (or name pattern) ``name`` serves."""
    return PATTERN_PROTOCOLS.get(name) or BENCHMARKS.get(name).protocols


def serving(protocol: str) -> list[str]:
    """The benchmarks and name patterns that serve ``protocol``, in registry order."""
    return [name for name in BENCHMARKS.describe() if protocol in protocols(name)]


def get_benchmark(name: str, protocol: str) -> Benchmark:
    """The entry of ``name``; an unknown name, or one that does not serve ``protocol`` (run or
    b2n), is a UsageError listing the benchmarks that do."""
    choices = ", ".join(serving(protocol))
    if name not in BENCHMARKS:
        raise UsageError(f"unknown {PROTOCOLS[protocol]} {name!r}; choose one of: {choices}")
    entry = BENCHMARKS.get(name)
    if protocol not in entry.protocols:
        served = " and ".join(f"promptcl {p}" for p in entry.protocols)
        raise UsageError(
            f"benchmark {name} serves {served} only; for promptcl {protocol} choose one of: "
            f"{choices}"
        )
    return entry


def build_benchmark(name: str, cfg: StreamDataConfig, seed: int) -> TaskStream:
    """The task stream of benchmark ``name`` for ``promptcl run`` (and eval, predict)."""
    entry, defaults = get_benchmark(name, "run"), StreamDataConfig()
    for key in OWN_KEYS:
        value = getattr(cfg, key)
        if key not in entry.reads and value != getattr(defaults, key):
            raise UsageError(
                f"benchmark {name} does not read data.{key} (set to {value}); remove it"
            )
    return entry.stream(cfg, seed)


def load_labelled(name: str, root: str | None, split: str, template: str | None) -> LabelledData:
    """The labelled data of benchmark ``name`` (or ``coop:NAME``) for ``promptcl b2n``: its
    training split and ``split`` (test, or val to choose settings) as the evaluation split;
    ``template`` (None: the data set's own) holds {} for a class name."""
    if split not in ("test", "val"):
        raise UsageError(f"data.eval_split={split!r}; use test, or val to choose settings")
    if name.startswith("coop:") and name[5:]:
        data = labelled.coop_images(name[5:], root, split, template)
    else:
        data = get_benchmark(name, "b2n").labelled(root, split, template)
    if not data.train or not data.test:
        raise UsageError(f"{name} has no {'training' if not data.train else split} samples")
    return data


__all__ = [
    "BENCHMARKS",
    "Benchmark",
    "ImageProcessor",
    "LabelledData",
    "Split",
    "TaskStream",
    "TextProcessor",
    "build_benchmark",
    "build_stream",
    "data_license",
    "get_benchmark",
    "load_labelled",
    "protocols",
    "register_benchmark",
    "split_into_tasks",
]
