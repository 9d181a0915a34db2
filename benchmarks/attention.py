"""CPU attention by precision and sequence length: forward and forward + backward of
``backbones.attention.attend`` (what promptcl runs) against PyTorch's bf16 kernel as it is,
on this machine's ISA. The rule in ``attention_in_fp32`` (bf16 attention in fp32 except on AMX
CPUs) is chosen from such measurements.

    python benchmarks/attention.py [--lengths 64 128 197] [--batch 16] [--heads 6] [--dim 64]

Defaults: ViT-S/16's attention (6 heads of 64) at batch 16; 197 tokens is a 224 px image.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from common import machine, markdown_table, update_readme_section

from promptcl.backbones.attention import attend, attention_in_fp32, cpu_has_amx


def steps(attention, shape: tuple[int, ...], dtype: torch.dtype) -> list[Callable[[], None]]:
    """The forward, and the forward + backward to q, k, v, of ``attention`` on random inputs."""
    q, k, v = (torch.randn(shape, dtype=dtype, requires_grad=True) for _ in range(3))

    def forward() -> None:
        with torch.no_grad():
            attention(q, k, v)

    def both() -> None:
        attention(q, k, v).float().sum().backward()

    return [forward, both]


def median_ms(variants: list[list[Callable[[], None]]], repeats: int) -> list[list[float]]:
    """Median ms of each step of each variant, the variants alternated call by call (so a
    machine whose load changes slows them alike), after one warm-up call each."""
    times = [[[] for _ in steps] for steps in variants]
    for round in range(repeats + 1):
        for v, steps in enumerate(variants):
            for s, step in enumerate(steps):
                start = time.perf_counter()
                step()
                if round:
                    times[v][s].append(1000 * (time.perf_counter() - start))
    return [[statistics.median(t) for t in per_step] for per_step in times]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[64, 128, 197])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--heads", type=int, default=6)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--no-readme", action="store_true")
    args = parser.parse_args()
    variants = {
        "fp32": (torch.float32, lambda q, k, v: attend(q, k, v, None)),
        "bf16, promptcl's attend": (torch.bfloat16, lambda q, k, v: attend(q, k, v, None)),
        "bf16, PyTorch's bf16 kernel": (
            torch.bfloat16,
            lambda q, k, v: F.scaled_dot_product_attention(q, k, v),
        ),
    }
    rows = []
    for n in args.lengths:
        shape = (args.batch, args.heads, n, args.dim)
        made = [steps(attention, shape, dtype) for dtype, attention in variants.values()]
        for name, (forward, both) in zip(variants, median_ms(made, args.repeats), strict=True):
            rows.append([n, name, f"{forward:.2f}", f"{both:.2f}"])
            print(*rows[-1], flush=True)
    rule = "fp32" if attention_in_fp32(torch.empty(0, dtype=torch.bfloat16)) else "bf16"
    amx = "yes" if cpu_has_amx() else "no"
    text = "\n".join([
        f"CPU attention by precision (`benchmarks/attention.py`): batch {args.batch}, "
        f"{args.heads} heads of {args.dim}, ms per call, median of {args.repeats} calls, the "
        f"variants alternated call by call. On this CPU (AMX: {amx}) promptcl runs bf16 "
        f"attention in {rule} (`backbones/attention.py`, `attention_in_fp32`).",
        "",
        markdown_table(["tokens", "attention", "forward ms", "forward + backward ms"], rows),
        "",
        f"Machine: {machine()}.",
        f"Command: `python benchmarks/attention.py --lengths {' '.join(map(str, args.lengths))}"
        f" --batch {args.batch} --heads {args.heads} --dim {args.dim}`",
    ])  # fmt: skip
    if not args.no_readme:
        update_readme_section("attention-isa", text)
    print(text)


if __name__ == "__main__":
    main()
