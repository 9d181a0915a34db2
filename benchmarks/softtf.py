"""Soft-TransFormers and its baselines with the packaged MiniLM, on `clinc150-15` or `text4`:
dualprompt, softtf (Prompt ID), softtf with per-sample Gradient ID, softtf with the flagged
batch mode, wsn, lora, adapter (budgets matched to softtf's masks), ncm. Writes a markdown
table (also into docs/results.md).

    python benchmarks/softtf.py --data-root ../shared/data [--benchmark clinc150-15|text4]
        [--seeds 0 1 2] [--train-per-class N] [--test-per-class N]

Inference time per sample is measured apart from the runs, on the same trained tensors (the
softtf Prompt ID run of seed 0 after its last task), for each task-inference mode, on the same
mixed test batches, one thread: timings inside runs share the machine with other jobs.
A second table evaluates the per-task methods' final tensors of the first seed with each
task-inference mode and with the task given, which separates what a method learns from what
task inference costs it.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import torch
from clinc150 import run_all
from clinc150 import table as clinc150_table
from common import REPO, machine, markdown_table, mean_std, update_readme_section

from promptcl.core.checkpoint import load_checkpoint
from promptcl.protocols.continual import Experiment, load_run_config
from promptcl.sweeps.table import Run
from promptcl.tuners.edits import EditTuner

METHODS = [
    "dualprompt",
    "softtf",
    "softtf-gradient",
    "softtf-tii",
    "softtf-batch",
    "wsn",
    "lora",
    "adapter",
    "coda",
    "ncm",
    "lda",
    "ranpac",
]
# trained with the true task: the final tensors can be evaluated under any task inference
PER_TASK = ["dualprompt", "softtf", "softtf-tii", "wsn", "lora", "adapter"]
MODES = {
    "softtf": "prompt",
    "softtf-gradient": "gradient",
    "softtf-tii": "tii",
    "softtf-batch": "gradient-batch",
}
TASK_INFERENCE = {"prompt": "Prompt ID", "gradient": "Gradient ID", "tii": "TII (tuner.tii)"}


def restored(run_dir: Path) -> Experiment:
    """A finished run's experiment with its trained tensors after the last task, in eval mode."""
    config = load_run_config(run_dir / "config.json", ["train.progress=false"])
    exp = Experiment(config)
    tensors, state = load_checkpoint(run_dir / "checkpoint")
    exp.restore(tensors, state)
    exp.tuner.eval()
    return exp


def time_inference(run_dir: Path, batches: int = 4) -> dict[str, float]:
    """Seconds per test sample of each task-inference mode on a trained softtf run; key
    "softtf-query" is Prompt ID paying its frozen query pass, as on inputs never seen before
    (Gradient ID needs no query)."""
    exp = restored(run_dir)
    config = exp.config
    indices = exp.indices_of("test", range(exp.stream.num_tasks))
    size = config.train.eval_batch_size
    data = list(exp.batches("test", indices[: batches * size], size))  # queries cached
    samples = sum(len(b.labels) for b in data)

    def per_sample(infer) -> float:
        with torch.no_grad():
            infer(data[0])  # warm-up
            start = time.perf_counter()
            for batch in data:
                infer(batch)
        return (time.perf_counter() - start) / samples

    seconds = {}
    for method, mode in MODES.items():
        exp.tuner.config.task_id = mode
        seconds[method] = per_sample(exp.tuner)
    exp.tuner.config.task_id = "prompt"
    seconds["softtf-query"] = per_sample(
        lambda b: exp.tuner(replace(b, query=exp.backbone.features(b.inputs)))
    )
    return seconds


def accuracy_by_task_inference(run_dir: Path) -> dict[str, float | None]:
    """FAA (%: accuracy per task after the last one, averaged over tasks) with each test
    sample's task named by Prompt ID, by per-sample Gradient ID, by the TII classifier on the
    frozen query (fitted in the run after every task), or given (the truth: a diagnostic of what
    task inference costs, not a class-incremental result). Cached in the run directory."""
    cached = run_dir / "accuracy_by_task_inference.json"
    if cached.is_file():
        accuracy = json.loads(cached.read_text())
        if accuracy.keys() >= {*TASK_INFERENCE, "given"}:  # else made before TII existed
            return accuracy
    exp = restored(run_dir)
    tuner = exp.tuner
    indices = exp.indices_of("test", range(exp.stream.num_tasks))
    edits = isinstance(tuner, EditTuner)
    modes = [*TASK_INFERENCE, "given"] if edits else ["prompt", "given"]
    accuracy: dict[str, float | None] = dict.fromkeys([*TASK_INFERENCE, "given"])
    tasks = torch.tensor(exp.sample_tasks["test"])
    for mode in modes:
        correct = torch.zeros(exp.stream.num_tasks)
        for batch in exp.batches("test", indices, exp.config.train.eval_batch_size):
            truth = tasks[batch.index.cpu()]
            task = truth.to(batch.labels.device) if mode == "given" else None
            if mode != "given" and isinstance(tuner, EditTuner):
                tuner.config.task_id = mode
            with torch.no_grad():
                right = (tuner(batch, task).logits.argmax(dim=1) == batch.labels).cpu()
            correct.index_add_(0, truth, right.float())
        total = torch.bincount(tasks[indices], minlength=exp.stream.num_tasks)
        accuracy[mode] = 100 * (correct / total).mean().item()
    cached.write_text(json.dumps(accuracy, indent=1))
    return accuracy


def run_of(results: dict[str, list[Run]], method: str, seed: int) -> Path:
    """The run directory of ``method`` and ``seed`` in clinc150.run_all's results."""
    return next(run.path for run in results[method] if run.metrics["seed"] == seed)


def task_inference_table(results: dict[str, list[Run]], methods: list[str], seed: int) -> str:
    rows = []
    for method in methods:
        accuracy = accuracy_by_task_inference(run_of(results, method, seed))
        rows.append([method, *(f"{v:.2f}" if v is not None else "-" for v in accuracy.values())])
    header = [f"method (seed {seed})", *TASK_INFERENCE.values(), "task given (not CIL)"]
    return markdown_table(header, rows)


def table(results: dict[str, list[Run]], seconds: dict[str, float]) -> str:
    # on new inputs Prompt ID also pays its query pass; Gradient ID needs none
    fresh = {**seconds, "softtf": seconds["softtf-query"]}
    rows = []
    for method, found in results.items():
        runs = [run.metrics for run in found]
        leaks = runs[0]["leaks_task_identity"]
        per_task = runs[0].get("params_per_task")
        spent = seconds.get(method)
        rows.append(
            [
                method + (" (leaks task identity)" if leaks else ""),
                mean_std([m["faa"] for m in runs]),
                mean_std([m["caa"] for m in runs]),
                mean_std([m["fm"] for m in runs]),
                mean_std([m["task_id_acc"] for m in runs]),
                f"{per_task:,}" if per_task is not None else "-",
                f"{spent / seconds['softtf']:.2f}" if spent is not None else "-",
                f"{fresh[method] / fresh['softtf']:.2f}" if spent is not None else "-",
            ]
        )
    header = [
        "method",
        "FAA",
        "CAA",
        "FM",
        "task-id acc",
        "params per task",
        "infer time / Prompt ID, queries cached",
        "same, queries computed",
    ]
    return markdown_table(header, rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", type=Path, required=True)
    parser.add_argument("--benchmark", default="clinc150-15", choices=["clinc150-15", "text4"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--methods", nargs="+", default=METHODS)
    parser.add_argument("--train-per-class", type=int, default=None)
    parser.add_argument("--test-per-class", type=int, default=None)
    parser.add_argument("--no-readme", action="store_true", help="do not update the docs pages")
    parser.add_argument(
        "--section",
        help="a table of --methods alone (no time column) for the docs section "
        "softtf-BENCHMARK-SECTION, beside the main one",
    )
    parser.add_argument(
        "--finished-only",
        action="store_true",
        help="with --section: tabulate the finished runs among --seeds, run nothing",
    )
    args = parser.parse_args()
    if "softtf" not in args.methods and not args.section:
        raise SystemExit("--methods must include softtf (the reference of the time column)")
    caps = ""
    if args.train_per_class is not None:
        caps += f"-cap{args.train_per_class}"
    if args.test_per_class is not None:
        caps += f"-test{args.test_per_class}"
    args.runs = REPO / "runs" / f"bench-softtf-{args.benchmark}{caps}"
    args.eval_split, args.backbone = "test", "minilm-l6"  # read by clinc150.run_all
    extra = [f"benchmark={args.benchmark}"]
    if args.test_per_class is not None:
        extra.append(f"data.test_per_class={args.test_per_class}")

    results = run_all(args, extra)
    torch.set_num_threads(1)
    data = (
        "all training data"
        if args.train_per_class is None
        else f"data.train_per_class={args.train_per_class}"
    )
    if args.test_per_class is not None:
        data += f", data.test_per_class={args.test_per_class}"
    seeds = " ".join(map(str, args.seeds))
    per_task = [m for m in PER_TASK if m in args.methods]
    about = (
        f"`{args.benchmark}`, packaged MiniLM-L6, {data}, seeds {seeds}, test split. "
        "FAA/CAA/FM in %, mean ± std over seeds."
    )
    if args.section:
        lines = [about, "", clinc150_table(results, seeds=args.finished_only), ""]
    else:
        seconds = time_inference(run_of(results, "softtf", args.seeds[0]))
        (args.runs / "inference_seconds.json").write_text(json.dumps(seconds, indent=1))
        lines = [
            f"{about} Params per task: what one task adds "
            "(edits + E-prompt + key). Inference time: per test sample, relative to softtf's "
            "Prompt ID on the same trained tensors, 1 thread, batch of the run's eval_batch_size; "
            f"with the frozen queries cached as in the runs ({seconds['softtf'] * 1e3:.1f} "
            "ms/sample) and with Prompt ID computing them, as on inputs never seen before "
            f"({seconds['softtf-query'] * 1e3:.1f} ms/sample; Gradient ID needs no query).",
            "",
            table(results, seconds),
            "",
        ]
    if per_task:
        lines += [
            "FAA (%) of the same trained tensors evaluated with each sample's task named by "
            "Prompt ID, by per-sample Gradient ID, by the TII classifier on the frozen query, or "
            "given (training always uses the true task, so only evaluation differs):",
            "",
            task_inference_table(results, per_task, args.seeds[0]),
            "",
        ]
    command = (
        f"python benchmarks/softtf.py --data-root DATA --benchmark {args.benchmark} --seeds {seeds}"
    )
    if args.train_per_class is not None:
        command += f" --train-per-class {args.train_per_class}"
    if args.test_per_class is not None:
        command += f" --test-per-class {args.test_per_class}"
    if args.section:
        command += f" --methods {' '.join(args.methods)} --section {args.section}"
        command += " --finished-only" if args.finished_only else ""
    lines += [f"Machine: {machine()}.", f"Command: `{command}`"]
    text = "\n".join(lines)
    name = f"softtf-{args.benchmark}" + (f"-{args.section}" if args.section else "")
    out = REPO / "benchmarks" / "results" / f"{name}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n", encoding="utf-8")
    if not args.no_readme:
        update_readme_section(name, text)
    print(text)


if __name__ == "__main__":
    main()
