"""Training samples/s of one process against two DDP processes (gloo) on this machine's CPU.

    python benchmarks/ddp_cpu.py --data-root DATA [--method dualprompt] [--train-per-class 10]

One process uses every core; two processes use half each (OMP_NUM_THREADS). On a 2-core
machine little gain is possible: the point is that the same command scales out unchanged
(docs/engine.md, "Several GPUs and clusters"). Figures are metrics.json's train_samples_per_s (all
samples of the stream over the training time, end-of-task stages included).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from common import machine, markdown_table, update_readme_section


def run(processes: int, args: argparse.Namespace, out: Path) -> dict:
    threads = max(1, (os.cpu_count() or 1) // processes)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    env.pop("PROMPTCL_DEFAULT_OUT", None)
    command = [
        sys.executable, "-m", "promptcl", "run", "--config", f"configs/clinc150/{args.method}.yaml",
        "--set", f"data.root={args.data_root}",
        "--set", f"data.train_per_class={args.train_per_class}",
        "--set", "train.accelerator=cpu", "--set", f"train.devices={processes}",
        "--set", "train.progress=false", "--out", str(out),
    ]  # fmt: skip
    subprocess.run(command, env=env, check=True, cwd=Path(__file__).resolve().parents[1])
    return json.loads((out / "metrics.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", type=Path, required=True)
    parser.add_argument("--method", default="dualprompt")
    parser.add_argument("--train-per-class", type=int, default=10)
    parser.add_argument("--no-readme", action="store_true")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for processes in (1, 2):
            m = run(processes, args, Path(tmp) / str(processes))
            rows.append([str(processes), f"{m['train_samples_per_s']:.1f}", f"{m['faa']:.2f}"])
            print(rows[-1], flush=True)
    text = "\n".join([
        f"{args.method} on clinc150-15 (minilm-l6, data.train_per_class={args.train_per_class}, "
        "seed 0), CPU, one process with every core against two processes with half each (gloo). "
        "train samples/s: metrics.json's train_samples_per_s (every sample of the stream over the "
        "training time, end-of-task stages included).",
        "",
        markdown_table(["processes", "train samples/s", "FAA"], rows),
        "",
        f"Machine: {machine()}.",
        f"Command: `python benchmarks/ddp_cpu.py --data-root DATA --method {args.method} "
        f"--train-per-class {args.train_per_class}`",
    ])  # fmt: skip
    if not args.no_readme:
        update_readme_section("ddp-cpu", text)
    print(text)


if __name__ == "__main__":
    main()
