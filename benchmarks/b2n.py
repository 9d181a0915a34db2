"""Base-to-novel on CLINC150 or DBpedia with the packaged MiniLM on both sides (16 shots per
base class): every method with a shipped config b2n/clinc150/ (in src/promptcl/configs/; for
DBpedia with --set benchmark=dbpedia), then a markdown table of base, novel and HM accuracy
(mean ± std over seeds), trained parameters and training time (also written into
docs/results.md between the BENCHMARK-b2n markers).

    python benchmarks/b2n.py --data-root ../shared/data [--benchmark dbpedia] [--seeds 0 1 2]
        [--test-per-class N] [--jobs 2]

The runs are a sweep under --runs (`promptcl sweep b2n`, a point per config and seed): finished
runs are reused and an unfinished one resumes, so an interrupted benchmark continues where it
stopped; `promptcl table RUNS` shows them grouped by method and setting.
"""

from __future__ import annotations

import argparse
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from common import REPO, machine, update_readme_section

from promptcl.config import SHIPPED_CONFIGS
from promptcl.sweeps import Sweep, collect
from promptcl.sweeps.table import Run, Table

CONFIGS = SHIPPED_CONFIGS / "b2n" / "clinc150"
METHODS = ["zeroshot", "coop", "ivlp", "maple", "mpl", "kgcoop", "cocoop", "promptsrc"]
# the shipped b2n/clinc150/<name>.yaml beyond the papers' settings (chosen on the validation split)
EXTRA = ["mpl-ctx2"]


# per benchmark: the overrides of the shipped configs, and the table's opening sentence
SETTINGS: dict[str, dict[str, list[str]]] = {
    "clinc150": {},
    "dbpedia": {
        "all": ["benchmark=dbpedia"],
        # PromptSRC's textual diversity: the topic templates compared on the validation split
        "promptsrc": [
            "tuner.templates=['an article about {}.', 'a wikipedia article about {}.', "
            "'this text is about {}.']"
        ],
    },
}
DATA = {
    "clinc150": "CLINC150 base-to-novel (75 base + 75 novel intents in a seeded order), packaged "
    "MiniLM-L6 encoding utterances and class texts ('a request about {}'), 16 shots per base "
    "intent",
    "dbpedia": "DBpedia base-to-novel (7 base + 7 novel topics in a seeded order; half of "
    "text4's DBpedia test file trains and the other half tests, cut per class as the text4 "
    "stream cuts it), packaged MiniLM-L6 encoding the articles (first 64 tokens) and class "
    "texts ('an article about {}.'), 16 shots per base topic",
}


def overrides(method: str, args: argparse.Namespace) -> list[str]:
    """The --set overrides of the runs of the shipped config of ``method``."""
    settings = SETTINGS[args.benchmark]
    extra = [f"data.test_per_class={args.test_per_class}"] if args.test_per_class else []
    return [
        f"data.root={args.data_root}",
        f"data.eval_split={args.split}",
        "train.progress=false",
        *settings.get("all", []),
        *settings.get(method, []),
        *extra,
    ]


def method_sweep(method: str, args: argparse.Namespace) -> Sweep:
    """The seeds of the shipped config of ``method`` as a sweep in --runs (``promptcl sweep
    b2n``); every method's points share the folder, named config=METHOD-seed=SEED."""
    sets = [f"seed={','.join(map(str, args.seeds))}", *overrides(method, args)]
    config = str(CONFIGS / f"{method}.yaml")
    return Sweep.from_args("b2n", config, sets, args.runs, named=("config", "seed"))


def run_one(method: str, index: int, args: argparse.Namespace) -> None:
    """Point ``index`` (a seed) of ``method``'s sweep: reused when finished, else run or
    resumed (in a worker process)."""
    import torch

    torch.set_num_threads(args.threads)
    sweep = method_sweep(method, args)
    sweep.run_point(sweep.points[index])
    print(f"{sweep.points[index].name}: done", file=sys.stderr, flush=True)


def finished(args: argparse.Namespace) -> dict[str, list[Run]]:
    """The finished runs among the requested ones, per method."""
    results = {}
    for method in args.methods:
        sweep = method_sweep(method, args)
        done = [args.runs / p.name for p in sweep.points if sweep.status(p) == "finished"]
        if done:
            results[method] = collect(done).runs
    return results


def run_all(args: argparse.Namespace) -> dict[str, list[Run]]:
    for method in args.methods:
        method_sweep(method, args).open(machine())
    jobs = [(m, i) for i in range(len(args.seeds)) for m in args.methods]
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        for future in [pool.submit(run_one, *job, args) for job in jobs]:
            future.result()
    return finished(args)


def table(results: dict[str, list[Run]]) -> str:
    """One row per method (``promptcl table``'s rows, keyed by the config)."""
    rows = [((method,), runs) for method, runs in results.items()]
    return Table("base-to-novel", ["method"], rows).markdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", type=Path, required=True)
    parser.add_argument("--benchmark", default="clinc150", choices=list(SETTINGS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS + EXTRA)
    parser.add_argument("--split", default="test", choices=["test", "val"])
    parser.add_argument(
        "--test-per-class", type=int, help="evaluate at most N samples per class (default all)"
    )
    parser.add_argument("--jobs", type=int, default=1, help="runs in parallel (processes)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument("--runs", type=Path, help="default: runs/bench-b2n[-BENCHMARK][-val]")
    parser.add_argument(
        "--out", type=Path, help="default: benchmarks/results/BENCHMARK-b2n-SPLIT.md"
    )
    parser.add_argument("--no-readme", action="store_true", help="do not update the docs pages")
    parser.add_argument(
        "--table-only", action="store_true", help="tabulate the finished runs; start none"
    )
    args = parser.parse_args()
    if args.runs is None:
        name = "bench-b2n" + ("" if args.benchmark == "clinc150" else f"-{args.benchmark}")
        args.runs = REPO / "runs" / (name + ("-val" if args.split == "val" else ""))
    results_name = f"{args.benchmark}-b2n-{args.split}.md"
    args.out = args.out or REPO / "benchmarks" / "results" / results_name

    results = finished(args) if args.table_only else run_all(args)
    seeds = " ".join(map(str, args.seeds))
    cap = f" ({args.test_per_class} test samples per class at most)" if args.test_per_class else ""
    promptsrc = (
        "; promptsrc its authors' 20 epochs at 0.0025 with Gaussian prompt aggregation"
        if "promptsrc" in results
        else ""
    )
    lines = [
        f"{DATA[args.benchmark]}, {args.split} split{cap}. Base accuracy over the base classes, "
        "novel over the novel ones, HM their harmonic mean (%, mean ± std over the seeds listed). "
        "Training "
        "as in MaPLe's and MPL's base-to-novel recipe for every method (SGD 0.0035, cosine, 5 "
        f"epochs, batch 4{promptsrc}), prompt sizes from each paper (depth capped at MiniLM's 6 "
        "blocks), not tuned; the template was chosen by zero-shot HM on the validation split. "
        "Train times are with other jobs sharing the 2 cores.",
        "",
        table(results),
        "",
    ]
    if "mpl-ctx2" in results:
        note = (
            "mpl-ctx2 is MPL with settings chosen on the validation split "
            "(src/promptcl/configs/b2n/clinc150/mpl-ctx2.yaml: 2 context tokens from the "
            "template as MaPLe, n_add 1, n_rm 1)."
        )
        reused = [
            str(r.metrics["seed"]) for r in results["mpl-ctx2"] if r.metrics.get("prompts_from")
        ]
        if reused:
            rows = (
                f"row for seed {reused[0]} evaluates"
                if len(reused) == 1
                else f"rows for seeds {', '.join(reused)} evaluate"
            )
            note += (
                f" Its test {rows} the prompts trained in that "
                "validation run (`promptcl b2n --prompts`): training never sees the evaluation "
                "split and is bit-identical (same per-epoch losses), and its train seconds are "
                "that run's."
            )
        lines += [note, ""]
    lines += [
        f"Machine: {machine()}.",
        "Command: `python benchmarks/b2n.py --data-root DATA"
        + (f" --benchmark {args.benchmark}" if args.benchmark != "clinc150" else "")
        + f" --seeds {seeds} --methods "
        + " ".join(results)
        + (f" --test-per-class {args.test_per_class}" if args.test_per_class else "")
        + (f" --split {args.split}`" if args.split != "test" else "`"),
    ]
    text = "\n".join(lines)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n", encoding="utf-8")
    if not args.no_readme and args.split == "test":
        update_readme_section(f"{args.benchmark}-b2n", text)
    print(text)


if __name__ == "__main__":
    main()
