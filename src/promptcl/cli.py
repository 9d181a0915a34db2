"""The ``promptcl`` command: run, resume, b2n and list."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from datetime import datetime
from pathlib import Path

from promptcl.config import RunConfig, load_config
from promptcl.errors import UsageError


def config_keys(cls: type = RunConfig, prefix: str = "") -> list[str]:
    """One line per settable key, with its default and help text."""
    lines = []
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        if dataclasses.is_dataclass(default):
            lines += config_keys(type(default), f"{prefix}{f.name}.")
            continue
        if f.name == "tuner":
            continue
        help_text = f.metadata.get("help", "")
        lines.append(f"  {prefix}{f.name} = {default!r}  {help_text}".rstrip())
    return lines


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="promptcl", description="Prompts, prefixes and masks on frozen transformers."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser(
        "run",
        help="run (or resume) a continual-learning experiment",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="config keys (--set KEY=VALUE):\n"
        + "\n".join(config_keys())
        + "\n  tuner.* = options of the chosen method (see docs/METHODS.md)",
    )
    run.add_argument("--config", type=Path, help="YAML file of config keys")
    run.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key"
    )
    run.add_argument("--out", type=Path, help="run directory (default: runs/<method>-...)")
    run.add_argument("--resume", type=Path, metavar="RUN_DIR", help="continue an interrupted run")
    add_b2n_parser(commands)
    commands.add_parser("list", help="methods, backbones and benchmarks")
    return parser


def add_b2n_parser(commands) -> None:
    from promptcl.dual.config import B2NConfig

    b2n = commands.add_parser(
        "b2n",
        help="learn prompts of a dual encoder on base classes; test on base and novel classes",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="config keys (--set KEY=VALUE):\n"
        + "\n".join(config_keys(B2NConfig))
        + "\n  tuner.* = options of the chosen method (see docs/METHODS.md)",
    )
    b2n.add_argument("--config", type=Path, help="YAML file of config keys")
    b2n.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key"
    )
    b2n.add_argument("--out", type=Path, help="run directory (default: runs/b2n-<method>-...)")
    b2n.add_argument(
        "--prompts",
        type=Path,
        metavar="FILE",
        help="evaluate these trained prompts (an earlier run's prompts.safetensors) instead of "
        "training",
    )


def command_list() -> None:
    from promptcl.backbones import NAMED_BACKBONES, PATTERNS
    from promptcl.data import BENCHMARKS
    from promptcl.tuners import TUNERS

    sections = {
        "methods": {name: cls.description for name, cls in TUNERS.items()},
        "backbones": {**{n: d for n, (d, _) in NAMED_BACKBONES.items()}, **PATTERNS},
        "benchmarks": {name: description for name, (description, _) in BENCHMARKS.items()},
    }
    sections |= dual_sections()
    for title, entries in sections.items():
        print(f"{title}:")
        width = max(map(len, entries))
        for name, description in entries.items():
            print(f"  {name:<{width}}  {description}")


def dual_sections() -> dict[str, dict[str, str]]:
    from promptcl.dual.data import B2N_BENCHMARKS, B2N_PATTERNS
    from promptcl.dual.encoders import DUAL_BACKBONES, DUAL_PATTERNS
    from promptcl.dual.methods import DUAL_METHODS

    return {
        "dual-encoder methods (promptcl b2n)": {
            name: method.description for name, (_, method) in DUAL_METHODS.items()
        },
        "dual-encoder backbones": {
            **{name: d for name, (d, _) in DUAL_BACKBONES.items()},
            **DUAL_PATTERNS,
        },
        "b2n benchmarks": {
            **{name: d for name, (d, _) in B2N_BENCHMARKS.items()},
            **B2N_PATTERNS,
        },
    }


def command_b2n(args: argparse.Namespace) -> None:
    from promptcl.dual.config import load_b2n_config
    from promptcl.dual.protocol import run_b2n

    config = load_b2n_config(args.config, args.set)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    name = f"b2n-{config.method}-{config.benchmark.replace(':', '-')}-s{config.seed}-{stamp}"
    out = args.out or Path("runs") / name
    m = run_b2n(config, out, args.prompts)

    def pct(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f}"

    transfer = "".join(f"  {k} {pct(v)}" for k, v in m["transfer"].items())
    print(
        f"{m['method']} on {m['benchmark']} ({m['backbone']}, seed {m['seed']}, {m['shots']} "
        f"shots): base {pct(m['base_acc'])}  novel {pct(m['novel_acc'])}  HM {pct(m['hm'])}"
        f"{transfer}  trained params {m['trainable_params']}  train "
        f"{m['train_seconds']:.1f}s\nrun directory: {out}"
    )


def command_run(args: argparse.Namespace) -> None:
    from promptcl.learner import run

    if args.resume is not None:
        if args.out is not None and args.out != args.resume:
            raise UsageError("--out and --resume name different directories; pass only --resume")
        saved = args.resume / "config.json"
        if not saved.is_file():
            raise UsageError(f"{args.resume} is not a promptcl run directory; check the path")
        base = args.config or saved
        config = load_config(base, args.set)
        out = args.resume
    else:
        config = load_config(args.config, args.set)
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        out = (
            args.out or Path("runs") / f"{config.method}-{config.benchmark}-s{config.seed}-{stamp}"
        )
    try:
        summary = run(config, out, resume=args.resume is not None)
    except KeyboardInterrupt:
        print(f"\ninterrupted; continue with: promptcl run --resume {out}", file=sys.stderr)
        raise SystemExit(130) from None
    print(format_summary(summary, out))


def format_summary(m: dict, out: Path) -> str:
    def pct(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f}"

    return (
        f"{m['method']} on {m['benchmark']} ({m['backbone']}, seed {m['seed']}): "
        f"FAA {pct(m['faa'])}  CAA {pct(m['caa'])}  FM {pct(m['fm'])}  "
        f"task-id {pct(m['task_id_acc'])}  trained params {m['trainable_params']}  "
        f"train {m['train_seconds']:.1f}s\nrun directory: {out}"
    )


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "list":
            command_list()
        elif args.command == "b2n":
            command_b2n(args)
        else:
            command_run(args)
    except UsageError as err:
        print(f"promptcl: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
