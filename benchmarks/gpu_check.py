"""GPU check in one command: speed and peak memory of the image methods by precision, and two
runs end to end (engine, precision, checkpoint, resume, load, predict) on the device.

    python benchmarks/gpu_check.py --out DIR [--device cuda|cpu] [--tiny] [--batch-size N]

Speed: ViT-B/16 with random weights at 224 px (``--tiny``: the 2-block tiny-vit at 32 px) on
synthetic images, the training step of dualprompt, hash, hide, softtf and coda
(benchmarks/throughput.py's ``method_step``: the frozen query pass, then the continual
protocol's real step) and the floor (frozen forward + backward to the inputs), alone and with
the query pass, in fp32, bf16-mixed, bf16-true and compiled bf16-mixed; samples/s and the peak
GPU memory. A batch that does not fit is halved until it does (the table says the batch used).
End to end: a 2-task hash run on the same images (stopped after task 1, resumed, loaded,
predicting, evaluated) and an mpl base-to-novel run on random images with tiny-clip (no CLIP
weights needed; stopped after epoch 1, resumed, loaded, predicting).
Writes DIR/gpu_check.md and DIR/gpu_check.json; exits 1 if any part failed (every part runs).
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from common import machine, markdown_table
from PIL import Image
from throughput import floor_step, method_step, refresh_query, samples_per_second

import promptcl
from promptcl import load_config, run
from promptcl.core.checkpoint import load_checkpoint
from promptcl.models.continual import evaluate_run
from promptcl.protocols.b2n import load_b2n_config, run_b2n
from promptcl.protocols.continual import Experiment

METHODS = ["dualprompt", "hash", "hide", "softtf", "coda"]
FLOORS = ["floor", "floor + query"]
VARIANTS = {
    "fp32": ["train.precision=32-true"],
    "bf16-mixed": ["train.precision=bf16-mixed"],
    "bf16-true": ["train.precision=bf16-true"],
    "bf16-mixed compiled": ["train.precision=bf16-mixed", "train.compile=true"],
}
FAST_STAGES = ["tuner.tii.epochs=1", "tuner.tii.align_epochs=1", "tuner.tap.epochs=1"]
CLASSES = 4  # synthetic image classes, 2 tasks of 2
TEST_PER_CLASS = 4


def write_images(root: Path, train_per_class: int) -> Path:
    """train/<class>/ and test/<class>/ folders of random 32 px PNGs (an imagefolder root)."""
    rng = np.random.default_rng(0)
    for split, n in (("train", train_per_class), ("test", TEST_PER_CLASS)):
        for c in range(CLASSES):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


def settings(args: argparse.Namespace, images: Path) -> list[str]:
    backbone = (
        ["backbone=tiny-vit"]
        if args.tiny
        else ["backbone=timm:vit_base_patch16_224", "backbone_weights=random"]
    )
    return [*backbone, "benchmark=imagefolder", f"data.root={images}", "data.num_tasks=2",
            f"train.accelerator={args.device}", "train.progress=false"]  # fmt: skip


def on_device(step: Callable[[], None], device: str) -> Callable[[], None]:
    """``step``, waiting for the GPU to finish it (timings of asynchronous kernels)."""
    if device != "cuda":
        return step

    def synced() -> None:
        step()
        torch.cuda.synchronize()

    return synced


def timed(step: Callable[[], None], batch_size: int, repeats: int, device: str) -> dict:
    """Samples/s of ``step`` (after a warm-up step) and its peak GPU memory in MiB."""
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    speed = samples_per_second(on_device(step, device), batch_size, repeats)
    peak = torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else None
    return {"samples_per_s": speed, "peak_mib": peak}


def speed_row(name: str, variant: str, base: list[str], batch: int, args) -> dict:
    """One row of the speed table: ``name`` (a method or a floor) under ``variant``."""
    method = "dualprompt" if name in FLOORS else name  # the floors' query: a frozen forward
    fast = FAST_STAGES if method in ("hash", "hide") else []
    config = load_config(None, [*base, f"method={method}", f"train.batch_size={batch}", *fast,
                                *VARIANTS[variant]])  # fmt: skip
    exp = Experiment(config)
    batch_data = next(exp.batches("train", exp.indices_of("train", [0])[:batch], batch))
    if name == "floor":
        step = floor_step(exp, batch_data)
    elif name == "floor + query":
        floor = floor_step(exp, batch_data)

        def step() -> None:
            refresh_query(exp, batch_data)
            floor()
    else:
        step = method_step(exp, batch_data)
    return timed(step, batch, args.repeats, args.device)


def largest_fitting(measure: Callable[[int], dict], batch: int) -> dict:
    """``measure(batch)``, halving the batch while the GPU runs out of memory."""
    while True:
        try:
            return {"batch": batch, **measure(batch)}
        except torch.cuda.OutOfMemoryError:
            if batch == 1:
                raise
            batch //= 2
        finally:
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()


def check_hash_run(base: list[str], out: Path, device: str) -> str:
    """hash, 2 tasks: stopped after the first, resumed, loaded, predicting and evaluated."""
    precision = "bf16-mixed" if device == "cuda" else "32-true"
    config = load_config(None, [*base, "method=hash", *FAST_STAGES, "train.epochs=1",
                                "train.batch_size=16", f"train.precision={precision}"])  # fmt: skip
    if run(config, out, stop_after=1) is not None:
        raise AssertionError("the run did not stop after task 1")
    metrics = run(config, out, resume=True)
    if load_checkpoint(out / "checkpoint")[1].units_done != 2:
        raise AssertionError("the resumed run's checkpoint does not hold 2 tasks")
    model = promptcl.load(out, device=device)
    images = sorted((Path(config.data.root) / "test").rglob("*.png"))
    predictions = model.predict(images)
    if len(predictions) != len(images) or not {p.label for p in predictions} <= set(
        model.class_names
    ):
        raise AssertionError("predict gave other labels than the run's classes")
    figures = evaluate_run(out, [], device)
    return (
        f"{precision}; FAA {metrics['faa']:.1f} (random data); checkpoint "
        f"{metrics['checkpoint_bytes']:,} bytes; eval avg acc {figures['avg_acc']:.1f}"
    )


def check_mpl_b2n(out: Path, device: str) -> str:
    """mpl base-to-novel on random images with tiny-clip: 2 epochs, stopped after the first,
    resumed, loaded and predicting over the run's classes."""
    precision = "bf16-mixed" if device == "cuda" else "32-true"
    config = load_b2n_config(None, [
        "backbone=tiny-clip", "benchmark=random-images", "method=mpl", "shots=2",
        "train.epochs=2", "train.progress=false", f"train.accelerator={device}",
        f"train.precision={precision}",
    ])  # fmt: skip
    if run_b2n(config, out, stop_after=1) is not None:
        raise AssertionError("the run did not stop after epoch 1")
    metrics = run_b2n(config, out, resume=True)
    model = promptcl.load(out, device=device)
    images = [np.full((32, 32, 3), 40 * i, dtype=np.uint8) for i in range(3)]
    predictions = model.predict(images, class_names=model.class_names)
    if len(predictions) != 3 or not {p.label for p in predictions} <= set(model.class_names):
        raise AssertionError("predict gave other labels than the run's classes")
    return f"{precision}; HM {metrics['hm']:.1f} (random data)"


def attempt(part: dict, work: Callable[[], Any]) -> dict:
    """``part`` with the figures of ``work`` and status ok, or its error and status failed."""
    try:
        result = work()
        part.update(result if isinstance(result, dict) else {"detail": result}, status="ok")
    except Exception as err:  # every part runs; its failure is recorded
        traceback.print_exc()
        part.update(status="failed", error=f"{type(err).__name__}: {err}".splitlines()[0])
    print(json.dumps(part), file=sys.stderr, flush=True)
    return part


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--tiny", action="store_true", help="tiny random backbones (tests)")
    parser.add_argument("--batch-size", type=int, help="default 64 (--tiny: 16)")
    parser.add_argument("--repeats", type=int, help="timed steps (default 10; --tiny: 3)")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device here; pass --device cpu --tiny")
    args.batch_size = args.batch_size or (16 if args.tiny else 64)
    args.repeats = args.repeats or (3 if args.tiny else 10)
    if args.tiny:  # a tiny model gains nothing from threads, and a busy machine loses
        torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    images = write_images(args.out / "images", max(args.batch_size // 2, 8))
    base = settings(args, images)
    speed = []
    for name in [*FLOORS, *METHODS]:
        for variant in VARIANTS:
            part = {"part": "speed", "name": name, "variant": variant}
            if "compiled" in variant and args.device == "cpu":
                speed.append({**part, "status": "skipped", "error": "compile: CUDA only here"})
                continue

            def measure(batch: int, name=name, variant=variant) -> dict:
                return speed_row(name, variant, base, batch, args)

            speed.append(attempt(part, lambda m=measure: largest_fitting(m, args.batch_size)))
    out, device = args.out, args.device
    runs = [
        attempt({"part": "hash, 2 tasks"}, lambda: check_hash_run(base, out / "hash", device)),
        attempt({"part": "mpl b2n"}, lambda: check_mpl_b2n(out / "mpl", device)),
    ]
    write_report(args, speed, runs)
    if any(p["status"] == "failed" for p in speed + runs):
        raise SystemExit(1)


def write_report(args: argparse.Namespace, speed: list[dict], runs: list[dict]) -> None:
    model = "tiny-vit (2 blocks, 32 px)" if args.tiny else "ViT-B/16, random weights, 224 px"

    def figure(part: dict, key: str, fmt: str) -> str:
        return fmt.format(part[key]) if part.get(key) is not None else "-"

    rows = [
        [p["name"], p["variant"], figure(p, "batch", "{}"), figure(p, "samples_per_s", "{:.1f}"),
         figure(p, "peak_mib", "{:.0f}"), p["status"] + (f": {p['error']}" if "error" in p else "")]
        for p in speed
    ]  # fmt: skip
    checks = [[p["part"], p["status"], p.get("detail") or p.get("error", "")] for p in runs]
    text = "\n".join([
        f"GPU check on {args.device}: {model}, synthetic images, training step samples/s and "
        "peak GPU memory (MiB; - on the CPU). Floor: frozen forward + backward to the inputs; "
        "+ query: and the frozen query forward. Compiled: torch.compile of each block, timed "
        "after its warm-up.",
        "",
        markdown_table(["method", "variant", "batch", "samples/s", "peak MiB", "status"], rows),
        "",
        markdown_table(["end to end", "status", "detail"], checks),
        "",
        f"Machine: {machine()}.",
        f"Command: `python benchmarks/gpu_check.py --out DIR --device {args.device}"
        + (" --tiny`" if args.tiny else "`"),
    ])  # fmt: skip
    (args.out / "gpu_check.md").write_text(text + "\n", encoding="utf-8")
    report = {"machine": machine(), "device": args.device, "tiny": args.tiny,
              "speed": speed, "runs": runs}  # fmt: skip
    (args.out / "gpu_check.json").write_text(json.dumps(report, indent=1) + "\n")
    print(text)


if __name__ == "__main__":
    main()
