"""Training samples/s of DualPrompt on a frozen backbone in three precisions: fp32; autocast
to bf16 over fp32 weights; frozen weights stored in bf16 under the same autocast
(backbones/precision.py). One step = forward + backward to the trained tensors (prompts, keys,
head), no optimiser step, on random token ids (the speed does not depend on the words).

    python benchmarks/precision.py [--backbone minilm-l6] [--batch 32] [--tokens 32]
        [--threads 2] [--repeats 10]
"""

from __future__ import annotations

import argparse
import contextlib
import time

import torch
import torch.nn.functional as F

from promptcl.backbones import build_backbone
from promptcl.backbones.precision import store_frozen
from promptcl.config import build_dataclass
from promptcl.tuners import Batch, get_tuner

MODES = ("fp32", "autocast-bf16", "bf16-frozen")


def make_step(mode: str, args: argparse.Namespace):
    backbone = build_backbone(args.backbone)
    cls = get_tuner("dualprompt")
    torch.manual_seed(0)
    tuner = cls(build_dataclass(cls.config_class, {}, "dualprompt"), backbone, 10)
    tuner.begin_task(0, list(range(10)))
    if mode == "bf16-frozen":
        store_frozen(tuner)
    ids = torch.randint(1000, 20000, (args.batch, args.tokens))
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    labels = torch.arange(args.batch) % 10
    task = torch.zeros_like(labels)

    def autocast():
        if mode == "fp32":
            return contextlib.nullcontext()
        return torch.autocast("cpu", dtype=torch.bfloat16)

    def step() -> None:
        with autocast():
            batch = Batch(inputs, labels, torch.arange(args.batch), backbone.features(inputs))
            out = tuner.train()(batch, task=task)
            loss = F.cross_entropy(out.logits.float(), labels)
            loss = loss + sum(tuner.loss_terms(batch, out, 0).values())
        tuner.zero_grad(set_to_none=True)
        loss.backward()

    return step


def samples_per_second(step, batch: int, repeats: int) -> float:
    step()  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        step()
    return batch * repeats / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="minilm-l6")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3, help="Modes run in turn, this often.")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    steps = {mode: make_step(mode, args) for mode in MODES}
    speeds = {mode: [] for mode in MODES}
    for _ in range(args.rounds):  # interleaved: a shared machine's load hits every mode alike
        for mode in MODES:
            speeds[mode].append(samples_per_second(steps[mode], args.batch, args.repeats))
    print(f"{args.backbone}, dualprompt, batch {args.batch} x {args.tokens} tokens, "
          f"{args.threads} threads; samples/s per round (best, ratio to fp32's best):")  # fmt: skip
    best_fp32 = max(speeds["fp32"])
    for mode in MODES:
        rounds = ", ".join(f"{s:.1f}" for s in speeds[mode])
        best = max(speeds[mode])
        print(f"  {mode:14s} {rounds}  (best {best:.1f}, {best / best_fp32:.2f}x)")


if __name__ == "__main__":
    main()
