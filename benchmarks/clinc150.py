"""CLINC150 (clinc150-15: 15 tasks of 10 intents) with the packaged MiniLM: a suite of the
shipped configs clinc150/ (src/promptcl/configs/clinc150/), then a markdown table (also written
into docs/results.md).

    python benchmarks/clinc150.py --data-root ../shared/data [--suite core|hash] [--seeds 0 1 2]
        [--train-per-class N] [--test-per-class N] [--backbone mpnet-base] [--eval-split test|val]

Suites: core = the baselines of the core library (with training throughput next to the floor);
hash = Hash, its ablations, Hash with HiDe's contrastive term (hash-contrast, an option) and the
methods it is compared with; second-order = the frozen-feature baselines (ncm, lda, ranpac), coda,
and hash with the LDA task-identity classifier; encoders = ncm, dualprompt, hide and hash for
--backbone mpnet-base (all-mpnet-base-v2, `.[mpnet]`); tii-head = ranpac (and with first-session
adaptation), lda, hide, hash and hash-contrast, each of the last three also with RanPAC's ridge
as TII classifier and head, and hide and hash with it and a TII query adapted on the first task
(issue 27). --projection-dim M sets every random projection (names the table -mM).

The main table uses all training data (100 per intent) and goes into
benchmarks/results/clinc150-SUITE.md and the docs section clinc150-SUITE. A capped run
(--train-per-class N) is a second, labelled table: clinc150-SUITE-capN.md, and the docs section
clinc150-SUITE-capN only where a docs page has one. --backbone and --test-per-class name the
table too (clinc150-SUITE-BACKBONE-capN-testN). --eval-split val (for choosing
hyper-parameters) writes clinc150-SUITE[-capN]-val.md and never touches the docs pages.
On 2 CPU cores one full-data Hash run of clinc150-15 takes about 35 minutes.

The runs are one sweep under --runs (`promptcl sweep run`, a point per config and seed):
finished runs are reused and an unfinished one resumes, so an interrupted benchmark continues
where it stopped; `promptcl table RUNS` shows its runs grouped by method and setting.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from common import REPO, machine, section_files, update_readme_section
from throughput import measure

from promptcl import load_config
from promptcl.config import SHIPPED_CONFIGS
from promptcl.protocols.continual import Experiment
from promptcl.sweeps import Sweep, collect
from promptcl.sweeps.table import Run, Table

CONFIGS = SHIPPED_CONFIGS / "clinc150"
SUITES = {
    "core": ["ncm", "lda", "ranpac", "linear", "finetune", "joint", "l2p", "dualprompt", "coda"],
    "hash": [
        "hash",
        "hash-contrast",
        "hash-pool",
        "hash-hdr",
        "hash-hgm",
        "hide",
        "norga",
        "dualprompt",
        "coda",
        "ncm",
        "lda",
        "ranpac",
    ],  # fmt: skip
    # the second-order baselines beside ncm, and hash with the LDA TII classifier (the default)
    "second-order": ["ncm", "lda", "ranpac", "ranpac-m2000", "coda", "hash-tii-lda"],
    "encoders": ["ncm", "dualprompt", "hide", "hash"],
    # issue 27: RanPAC's ridge as the HiDe family's TII classifier and head, first-session
    # adaptation (of ranpac's features and of the TII's query), against the frozen-feature
    # classifiers
    "tii-head": [
        "ranpac",
        "ranpac-adapt",
        "lda",
        "hide",
        "hide-ranpac",
        "hide-ranpac-adapt",
        "hash",
        "hash-ranpac",
        "hash-ranpac-adapt",
        "hash-contrast",
        "hash-contrast-ranpac",
    ],
    # issue 28: the methods of recent tables, beside the frozen-feature classifiers and hash/hide
    "recent": ["aper", "ease", "mos", "inflora", "sdlora", "ncm", "lda", "ranpac", "hide", "hash"],
}
# --projection-dim M sets the random projection of these methods' configs: ranpac's own, the
# HiDe family's TII classifier and head (tuner.tii.projection_dim serves both)
PROJECTION_KEYS = {
    "ranpac": "tuner.dim",
    "hide": "tuner.tii.projection_dim",
    "norga": "tuner.tii.projection_dim",
    "hash": "tuner.tii.projection_dim",
}
BACKBONES = {"minilm-l6": "packaged MiniLM-L6", "mpnet-base": "all-mpnet-base-v2 (mpnet-base)"}


def run_all(args: argparse.Namespace, extra: Sequence[str] = ()) -> dict[str, list[Run]]:
    """The shipped clinc150/METHOD.yaml of each method and seed as sweeps under --runs (``promptcl
    sweep run``, one per method since --projection-dim sets a key of its own per method:
    finished points reused, unfinished ones resumed), with ``extra`` overrides; METHOD -> its
    finished runs. --finished-only runs nothing."""
    seeds = ",".join(map(str, args.seeds))
    finished_only = getattr(args, "finished_only", False)
    results: dict[str, list[Run]] = {}
    for method in args.methods:
        sets = [f"seed={seeds}", *overrides(args), *extra, *projection(args, method)]
        config = str(CONFIGS / f"{method}.yaml")
        sweep = Sweep.from_args("run", config, sets, args.runs, named=("config", "seed"))
        if not finished_only:
            sweep.open(machine())
        for point in sweep.points:
            if not finished_only:
                sweep.run_point(point)
            folder = args.runs / point.name
            if (folder / "metrics.json").is_file():
                (run,) = collect([folder]).runs
                results.setdefault(method, []).append(run)
                print(f"{point.name}: FAA {run.metrics['faa']:.2f}", file=sys.stderr, flush=True)
    return results


def overrides(args: argparse.Namespace) -> list[str]:
    items = [f"data.root={args.data_root}", "train.progress=false"]
    if args.train_per_class is not None:
        items.append(f"data.train_per_class={args.train_per_class}")
    if args.test_per_class is not None:
        items.append(f"data.test_per_class={args.test_per_class}")
    if args.backbone != "minilm-l6":
        items.append(f"backbone={args.backbone}")
    if args.eval_split != "test":
        items.append(f"data.eval_split={args.eval_split}")
    return items


def projection(args: argparse.Namespace, method: str) -> list[str]:
    """--projection-dim as the key of the config ``method`` (PROJECTION_KEYS), if it has one."""
    key = PROJECTION_KEYS.get(load_config(CONFIGS / f"{method}.yaml").method)
    return [] if args.projection_dim is None or key is None else [f"{key}={args.projection_dim}"]


def variant(args: argparse.Namespace) -> str:
    """'' for the main table (minilm-l6, all data, whole test split); '-BACKBONE', '-capN',
    '-testN' and/or '-val' otherwise."""
    backbone = f"-{args.backbone}" if args.backbone != "minilm-l6" else ""
    cap = f"-cap{args.train_per_class}" if args.train_per_class is not None else ""
    test = f"-test{args.test_per_class}" if args.test_per_class is not None else ""
    dim = f"-m{args.projection_dim}" if args.projection_dim is not None else ""
    return backbone + cap + test + dim + ("-val" if args.eval_split != "test" else "")


def table(results: dict[str, list[Run]], seeds: bool = False) -> str:
    """One row per method (its config's name); ``seeds``: a column of the seeds each row
    averages (``promptcl table``'s rows, keyed by the config)."""
    rows = [((method,), runs) for method, runs in results.items()]
    return Table("continual", ["method"], rows).markdown(seeds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", type=Path, required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--suite", default="core", choices=SUITES)
    parser.add_argument("--methods", nargs="+", help="a subset of the suite's configs")
    parser.add_argument("--train-per-class", type=int, default=None)
    parser.add_argument("--test-per-class", type=int, default=None, help="a cap on the eval split")
    parser.add_argument("--backbone", default="minilm-l6", choices=BACKBONES)
    parser.add_argument("--eval-split", default="test", choices=["test", "val"])
    parser.add_argument(
        "--projection-dim",
        type=int,
        help="M of every random projection (ranpac's, the HiDe family's TII and head; "
        "default: the configs' 10000)",
    )
    parser.add_argument("--runs", type=Path, default=REPO / "runs" / "bench-clinc150")
    parser.add_argument("--out", type=Path, help="default: benchmarks/results/clinc150-SUITE.md")
    parser.add_argument("--no-readme", action="store_true", help="do not update the docs pages")
    parser.add_argument(
        "--finished-only",
        action="store_true",
        help="tabulate the finished runs among --seeds (a seeds column says which), run nothing",
    )
    args = parser.parse_args()
    args.methods = args.methods or SUITES[args.suite]
    name = f"clinc150-{args.suite}{variant(args)}"
    args.out = args.out or REPO / "benchmarks" / "results" / f"{name}.md"
    args.runs = args.runs.with_name(args.runs.name + variant(args))

    results = run_all(args)
    cap = (
        "all training data (100 per intent)"
        if args.train_per_class is None
        else (f"data.train_per_class={args.train_per_class}")
    )
    seeds = " ".join(map(str, args.seeds))
    if args.test_per_class is not None:
        cap += f", a seeded {args.test_per_class} {args.eval_split} samples per intent"
    if args.projection_dim is not None:
        cap += f", random projections of M = {args.projection_dim}"
    label = "" if variant(args) in ("", "-val") else "Second table, capped data: "
    lines = [
        f"{label}CLINC150 `clinc150-15` (15 tasks x 10 intents), {BACKBONES[args.backbone]}, "
        f"{cap}, "
        f"seeds {seeds}{' (the finished runs among them)' if args.finished_only else ''}, "
        f"{args.eval_split} split. FAA/CAA/FM in %, mean ± std over seeds; "
        "trained params count every tensor the method learns (prompts, keys, routers, heads, "
        "TII classifier).",
        "",
        table(results, seeds=args.finished_only),
        "",
    ]
    if args.suite == "core" and not args.finished_only:
        config = load_config(CONFIGS / "dualprompt.yaml", [*overrides(args), "seed=0"])
        speed = measure(Experiment(config), config.train.batch_size)
        lines += [
            f"Training throughput (batch {config.train.batch_size}, samples/s): dualprompt "
            f"{speed['method']:.0f}, floor (frozen forward + backward to the inputs) "
            f"{speed['floor']:.0f}.",
            "",
        ]
    command = f"python benchmarks/clinc150.py --data-root DATA --suite {args.suite} --seeds {seeds}"
    if args.train_per_class:
        command += f" --train-per-class {args.train_per_class}"
    if args.test_per_class:
        command += f" --test-per-class {args.test_per_class}"
    if args.backbone != "minilm-l6":
        command += f" --backbone {args.backbone}"
    if args.eval_split != "test":
        command += f" --eval-split {args.eval_split}"
    if args.projection_dim is not None:
        command += f" --projection-dim {args.projection_dim}"
    if args.finished_only or args.methods != SUITES[args.suite]:
        command += f" --methods {' '.join(args.methods)}"
    if args.finished_only:
        command += " --finished-only"
    lines += [f"Machine: {machine()}.", f"Command: `{command}`"]
    text = "\n".join(lines)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n", encoding="utf-8")
    if not args.no_readme and args.eval_split == "test":
        if section_files(name) or not variant(args):
            update_readme_section(name, text)
        else:
            print(f"no docs page has a {name} section; the table is in {args.out}", file=sys.stderr)
    print(text)


if __name__ == "__main__":
    main()
