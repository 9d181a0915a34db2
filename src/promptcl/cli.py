"""The ``promptcl`` command: run, resume, b2n, predict, eval, list, push, sweep, table and tune."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import signal
import sys
import textwrap
import unicodedata
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from promptcl.config import B2NConfig, RunConfig, resolve_config, shipped_configs
from promptcl.errors import UsageError
from promptcl.files import check_output, check_path, dumps, read_text, write_output


def config_keys(cls: type = RunConfig, prefix: str = "", instance: Any = None) -> list[str]:
    """One line per settable key, with its default and help text (a nested config's defaults
    are those of the instance its field's default gives)."""
    lines = []
    for f in dataclasses.fields(cls):
        if instance is not None:
            default = getattr(instance, f.name)
        else:
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        if dataclasses.is_dataclass(default):
            lines += config_keys(type(default), f"{prefix}{f.name}.", default)
            continue
        if f.name == "tuner":
            continue
        help_text = f.metadata.get("help", "")
        lines.append(f"  {prefix}{f.name} = {default!r}  {help_text}".rstrip())
    return lines


def chosen_method(argv: list[str], default: str) -> str:
    """The method a command line picks (--set method=..., else --config's), for --help."""
    method = default
    for i, arg in enumerate(argv[:-1]):
        if arg == "--config":
            # --help must not fail on a bad file; running will say why
            with contextlib.suppress(Exception):
                method = OmegaConf.load(resolve_config(argv[i + 1])).get("method", method)
    for i, arg in enumerate(argv[:-1]):
        if arg == "--set" and argv[i + 1].startswith("method="):
            method = argv[i + 1].partition("=")[2]
    return method


def keys_epilog(schema: type, method: str, options_of) -> str:
    """The --help epilog: every key of ``schema``, then the chosen method's tuner.* keys."""
    lines = ["config keys (--set KEY=VALUE):", *config_keys(schema)]
    try:
        options = options_of(method)
    except UsageError as err:
        return "\n".join([*lines, f"  tuner.* = options of the chosen method ({err})"])
    tuner = config_keys(options, "tuner.") or ["  (none)"]
    hint = "(--set method=NAME --help lists another method's)"
    return "\n".join([*lines, f"options of method {method!r} {hint}:", *tuner])


def config_arguments(parser: argparse.ArgumentParser, out: str) -> None:
    parser.add_argument("--config", type=Path, help="YAML file of config keys")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key"
    )
    parser.add_argument("--out", type=Path, help=f"run directory (default: {out})")


def pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    from promptcl.protocols.b2n import method_options
    from promptcl.protocols.continual import tuner_options

    argv = sys.argv[1:] if argv is None else argv
    wants_help = "-h" in argv or "--help" in argv  # the key lists are built for --help only
    parser = argparse.ArgumentParser(
        prog="promptcl", description="Prompts, prefixes and masks on frozen transformers."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser(
        "run",
        help="run (or resume) a continual-learning experiment",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=keys_epilog(RunConfig, chosen_method(argv, "hash"), tuner_options)
        if wants_help
        else None,
    )
    config_arguments(run, "runs/<method>-...")
    run.add_argument("--resume", type=Path, metavar="RUN_DIR", help="continue an interrupted run")
    b2n = commands.add_parser(
        "b2n",
        help="learn prompts of a dual encoder on base classes; test on base and novel classes",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=keys_epilog(B2NConfig, chosen_method(argv, "mpl"), method_options)
        if wants_help
        else None,
    )
    config_arguments(b2n, "runs/b2n-<method>-...")
    b2n.add_argument(
        "--prompts",
        type=Path,
        metavar="RUN_OR_FILE",
        help="evaluate the trained prompts of an earlier b2n run (its directory, or a "
        "safetensors file) instead of training",
    )
    b2n.add_argument("--resume", type=Path, metavar="RUN_DIR", help="continue an interrupted run")
    predict = commands.add_parser(
        "predict", help="classify texts or images with a finished run (promptcl.load)"
    )
    predict.add_argument(
        "run", metavar="RUN", help="a run directory, or hf:OWNER/NAME[@REVISION] on the Hub"
    )
    predict.add_argument("--text", action="append", default=[], help="a text to classify")
    predict.add_argument(
        "--input",
        type=Path,
        metavar="FILE",
        help='lines of text, JSON lines with a "text" field, or (image runs) image paths',
    )
    predict.add_argument("--output", type=Path, metavar="FILE.jsonl", help="write JSON lines")
    predict.add_argument(
        "--class-names",
        metavar="NAMES",
        help="b2n runs: the classes to score, comma-separated or a file of one name per line",
    )
    use_arguments(predict)
    predict.add_argument("--batch-size", type=int, help="default: the run's eval batch size")
    evaluate = commands.add_parser(
        "eval", help="evaluate a finished run on a labelled test set with its class names"
    )
    evaluate.add_argument("run", type=Path, metavar="RUN", help="a run directory")
    evaluate.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="the test set: benchmark, data.* (also train.eval_batch_size, train.precision)",
    )
    evaluate.add_argument("--output", type=Path, metavar="FILE.json", help="write the figures")
    use_arguments(evaluate)
    commands.add_parser("list", help="methods, backbones, benchmarks and shipped configs")
    push = commands.add_parser(
        "push",
        help="upload a finished run (the files promptcl.load reads) and a model card to the "
        "Hugging Face Hub",
    )
    push.add_argument("run", type=Path, metavar="RUN_DIR", help="a finished run directory")
    push.add_argument("repo", metavar="OWNER/NAME", help="the Hub repository (made if missing)")
    push.add_argument("--private", action="store_true", help="make a new repository private")
    work_arguments(commands)
    return parser


GRID_HELP = """values: KEY=A,B,C sweeps KEY over A, B and C; a comma inside [ ], { }, ( ) or quotes
does not split ('tuner.blocks=[0,1],[2,3]' is two lists) and \\, is a comma within a value.
Each point is a run directory SWEEP_DIR/KEY=VALUE-... (of the swept keys); running the command
again skips the finished points and resumes the unfinished ones; another grid in the same folder
adds its points. --point K runs the K-th point of --list (a SLURM array's index)."""


def work_arguments(commands: Any) -> None:
    """sweep, table and tune: work across runs (promptcl.sweeps)."""
    from promptcl.sweeps.table import FORMATS

    sweep = commands.add_parser(
        "sweep",
        help="a grid of runs (--set KEY=A,B ...), one run directory per point",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=GRID_HELP,
    )
    sweep.add_argument("protocol", choices=["run", "b2n"], help="the command of every point")
    sweep.add_argument("--config", help="YAML file of config keys; A.yaml,B.yaml sweeps them")
    sweep.add_argument(
        "--set", action="append", default=[], metavar="KEY=A[,B...]", help="a key's values"
    )
    sweep.add_argument("--out", type=Path, metavar="SWEEP_DIR", help="the sweep folder")
    sweep.add_argument(
        "--name-keys",
        default="",
        metavar="KEY,...",
        help="keys in every point's folder name even when not swept (e.g. seed: a grid that "
        "grows by seeds keeps its names)",
    )
    how = sweep.add_mutually_exclusive_group()
    how.add_argument("--jobs", type=int, default=1, help="points at a time (subprocesses)")
    how.add_argument(
        "--point", type=int, metavar="K", help="run only point K (0-based: a job array's index)"
    )
    how.add_argument("--list", action="store_true", help="print the points; run nothing")
    table = commands.add_parser(
        "table", help="mean ± std over seeds of finished runs, per method, benchmark and setting"
    )
    table.add_argument("dirs", nargs="+", type=Path, metavar="SWEEP_OR_RUN_DIR")
    table.add_argument("--format", choices=FORMATS, default="markdown")
    table.add_argument("--output", type=Path, metavar="FILE", help="write the table there")
    tune = commands.add_parser(
        "tune",
        help="choose settings on the validation split (Optuna TPE), then one test run",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="ranges: KEY=LOW:HIGH (uniform; integers when both are), KEY=LOW:HIGH:log, or "
        "KEY=A,B,C (a choice).\nRunning the command again continues the study in TUNE_DIR.",
    )
    tune.add_argument("protocol", choices=["run", "b2n"], help="the command of every trial")
    tune.add_argument("--config", help="YAML file of config keys")
    tune.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="a fixed config key"
    )
    tune.add_argument(
        "--range", action="append", default=[], metavar="KEY=RANGE", help="a key to tune"
    )
    tune.add_argument("--trials", type=int, default=20, help="finished trials wanted")
    tune.add_argument("--sampler-seed", type=int, default=0, help="seed of the TPE sampler")
    tune.add_argument("--out", type=Path, metavar="TUNE_DIR", help="the tuning folder")


def use_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", help="cpu, cuda, cuda:N (default: the run's accelerator)")


def command_list() -> None:
    from promptcl.backbones import BACKBONES
    from promptcl.data import BENCHMARKS, protocols
    from promptcl.dual.methods import DUAL_METHODS
    from promptcl.taskid.tii import TII_CLASSIFIERS
    from promptcl.tuners import TUNERS
    from promptcl.tuners.stages import HEADS

    methods = {
        name: f"{cls.description}; task identity: {task_inference(cls).rstrip('.')}"
        + (f"; checkpoint {cls.checkpoint_size}" if cls.checkpoint_size else "")
        for name, cls in TUNERS.items()
    }
    sections = {
        "methods (promptcl run)": methods,
        "TII classifiers (tuner.tii.classifier of hash, hide, norga; tuner.task_id=tii of "
        "softtf, wsn, lora, adapter; on the frozen query, or for hash, hide, norga with "
        "tuner.tii.adapt=true on a query adapted on the first task)": TII_CLASSIFIERS.describe(),
        "heads at test (tuner.head of hash, hide, norga)": HEADS.describe(),
        "dual-encoder methods (promptcl b2n)": DUAL_METHODS.describe(),
        "backbones (text backbones and CLIP also serve b2n as dual encoders)": BACKBONES.describe(),
        "benchmarks ([run]: promptcl run, [b2n]: promptcl b2n)": {
            name: f"[{', '.join(protocols(name))}] {description}"
            for name, description in BENCHMARKS.describe().items()
        },
        "shipped configs (--config FOLDER/NAME)": shipped_by_folder(),
    }
    for title, entries in sections.items():
        print(f"{title}:")
        width = max(map(len, entries))
        for name, description in entries.items():
            lines = textwrap.wrap(description, 96 - width, break_on_hyphens=False) or [""]
            print(f"  {name:<{width}}  {lines[0]}")
            for line in lines[1:]:
                print(f"  {'':<{width}}  {line}")


def shipped_by_folder() -> dict[str, str]:
    """Folder -> the names of the shipped configs in it."""
    folders: dict[str, list[str]] = {}
    for name in shipped_configs():
        folder, _, stem = name.rpartition("/")
        folders.setdefault(folder, []).append(stem)
    return {folder: " ".join(stems) for folder, stems in folders.items()}


def task_inference(cls: type) -> str:
    """How a method names each test sample's task: its tuner.task_id choices, or a fixed rule."""
    for f in dataclasses.fields(cls.config_class):
        if f.name == "task_id":
            return f"tuner.task_id (default {f.default}): {f.metadata.get('help', '')}"
    return cls.task_inference


def command_b2n(args: argparse.Namespace) -> None:
    from promptcl.protocols.b2n import B2NExperiment, load_b2n_config, run_b2n

    if args.prompts is not None and args.resume is not None:
        raise UsageError("--prompts evaluates finished prompts; there is nothing to --resume")
    config, out = run_config(args, B2NExperiment, load_b2n_config)
    with interrupted_hint(out, "b2n"):
        m = run_b2n(config, out, args.prompts, resume=args.resume is not None)
    if not main_rank():
        return

    transfer = "".join(f"  {k} {pct(v)}" for k, v in m["transfer"].items())
    print(
        f"{m['method']} on {m['benchmark']} ({m['backbone']}, seed {m['seed']}, {m['shots']} "
        f"shots): base {pct(m['base_acc'])}  novel {pct(m['novel_acc'])}  HM {pct(m['hm'])}"
        f"{transfer}  trained params {m['trainable_params']}  train "
        f"{m['train_seconds']:.1f}s\nrun directory: {printable(str(out))}"
    )


def run_config(args: argparse.Namespace, protocol, load) -> tuple[Any, Path]:
    """The config and run directory of a new run (--config, --set; --out, or by default
    runs/[b2n-]METHOD-BENCHMARK-sSEED-TIME), or of the run --resume names (its config.json,
    checked to be of ``protocol``'s kind, with --set applied)."""
    for option, path in (("--out", args.out), ("--resume", args.resume)):
        if path is not None:
            check_path(path, option)
    if args.resume is None:
        config = load(args.config, args.set)
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        prefix = "" if protocol.command == "run" else f"{protocol.command}-"
        benchmark = config.benchmark.replace(":", "-")
        name = f"{prefix}{config.method}-{benchmark}-s{config.seed}-{stamp}"
        return config, args.out or default_out(name)
    from promptcl.core.run import prepare

    if args.out is not None and args.out != args.resume:
        raise UsageError("--out and --resume name different directories; pass only --resume")
    run_dir = prepare(protocol, args.resume, resume=True)
    if args.config is None:
        return protocol.saved_config(run_dir, args.set), args.resume
    return load(args.config, args.set), args.resume


class Terminated(KeyboardInterrupt):
    """SIGTERM, what SLURM and Kubernetes send on preemption: stopped as Ctrl-C is."""


def terminate(signum: int, frame: Any) -> None:
    raise Terminated


def stopped(stop: KeyboardInterrupt, hint: str = "") -> SystemExit:
    """One line for Ctrl-C or SIGTERM (``hint``: how to go on); the shell's exit code."""
    what, code = ("terminated", 143) if isinstance(stop, Terminated) else ("interrupted", 130)
    print(f"\npromptcl: {what}{hint}", file=sys.stderr)
    return SystemExit(code)


@contextlib.contextmanager
def interrupted_hint(out: Path, command: str) -> Iterator[None]:
    """While a run of ``command`` lasts, the processes it starts share ``out``; Ctrl-C and
    SIGTERM say how to resume (the run's lock is released and its last checkpoint kept)."""
    try:
        with shared_out(out):
            yield
    except KeyboardInterrupt as stop:
        raise stopped(stop, f"; continue with: promptcl {command} --resume {out}") from None


SHARED_OUT = "PROMPTCL_DEFAULT_OUT"


def default_out(name: str) -> Path:
    """runs/NAME, or the first process's choice in the processes a multi-device run starts
    (they run this command again, later; see ``shared_out``)."""
    return Path(os.environ.get(SHARED_OUT) or Path("runs") / name)


@contextlib.contextmanager
def shared_out(out: Path) -> Iterator[None]:
    """While a run lasts, the processes it starts inherit ``out`` through the environment."""
    before = os.environ.get(SHARED_OUT)
    os.environ[SHARED_OUT] = str(out)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(SHARED_OUT)
        else:
            os.environ[SHARED_OUT] = before


def main_rank() -> bool:
    """Whether this is rank 0 (the one that prints) of a run's processes."""
    from lightning_fabric.utilities.rank_zero import rank_zero_only

    return getattr(rank_zero_only, "rank", 0) == 0


def command_run(args: argparse.Namespace) -> None:
    from promptcl.protocols.continual import Experiment, load_config, run

    config, out = run_config(args, Experiment, load_config)
    with interrupted_hint(out, "run"):
        summary = run(config, out, resume=args.resume is not None)
    if main_rank():
        print(format_summary(summary, out))


def format_summary(m: dict, out: Path) -> str:
    return (
        f"{m['method']} on {m['benchmark']} ({m['backbone']}, seed {m['seed']}): "
        f"FAA {pct(m['faa'])}  CAA {pct(m['caa'])}  FM {pct(m['fm'])}  "
        f"task-id {pct(m['task_id_acc'])}  trained params {m['trainable_params']}  "
        f"train {m['train_seconds']:.1f}s\nrun directory: {printable(str(out))}"
    )


def read_inputs(path: Path, modality: str) -> list[str]:
    """The inputs of a --input file: one text (or, for image runs, image path) per non-empty
    line; or JSON lines with a "text" field, when the first line is a JSON object."""
    lines = [(n, line) for n, line in enumerate(read_text(path).splitlines(), 1) if line.strip()]
    if not lines:
        raise UsageError(f"{path} holds no inputs; write one per line")
    try:
        jsonl = isinstance(json.loads(lines[0][1]), dict)
    except json.JSONDecodeError:
        jsonl = False
    if not jsonl:
        return [line.strip() if modality == "image" else line for _, line in lines]
    texts = []
    for n, line in lines:
        try:
            texts.append(json.loads(line)["text"])
        except (json.JSONDecodeError, KeyError, TypeError):
            texts.append(None)
        if not isinstance(texts[-1], str):
            raise UsageError(f'{path} line {n} is not a JSON object with a "text" string; fix it')
    return texts


def command_predict(args: argparse.Namespace) -> None:
    from promptcl.models import load

    if not args.text and args.input is None:
        raise UsageError('nothing to predict; pass --text "..." or --input FILE')
    if args.batch_size is not None and args.batch_size < 1:
        raise UsageError(f"--batch-size {args.batch_size} must be >= 1")
    check_output(args.output)
    model = load(args.run, args.device)
    if args.text and model.modality != "text":
        raise UsageError(f"{args.run} classifies images; pass a file of image paths with --input")
    inputs = args.text + ([] if args.input is None else read_inputs(args.input, model.modality))
    names = None if args.class_names is None else class_name_list(args.class_names)
    predictions = model.predict(inputs, args.batch_size, names)
    rows = [
        {"input": str(item), "label": p.label, "score": p.score, "task": p.task}
        for item, p in zip(inputs, predictions, strict=True)
    ]
    if args.output is not None:
        write_output(args.output, "".join(dumps(row) + "\n" for row in rows))
        print(f"wrote {len(rows)} predictions to {args.output}")
        return
    print(prediction_table(rows, with_task=model.tasks is not None))


def class_name_list(value: str) -> list[str]:
    """--class-names: a file of one name per line, or names separated by commas."""
    path = Path(value)
    text = read_text(path) if path.is_file() else value.replace(",", "\n")
    return [name.strip() for name in text.splitlines() if name.strip()]


SHOWN_ESCAPED = ("Cc", "Cf", "Cs", "Zl", "Zp")  # control, format, surrogate, line breaks


def printable(text: str) -> str:
    """``text`` for a terminal: control characters (newlines, the ESC of terminal sequences,
    bidirectional overrides, ...) as Python escapes, so it shows on one line as it is."""
    return "".join(
        c.encode("unicode_escape").decode("ascii")
        if unicodedata.category(c) in SHOWN_ESCAPED
        else c
        for c in text
    )


def prediction_table(rows: list[dict[str, Any]], with_task: bool, width: int = 60) -> str:
    """Predictions as aligned columns: input (shortened to ``width``), label, score, task;
    control characters escaped (``printable``)."""
    inputs = [printable(row["input"]) for row in rows]
    cells = [
        [
            text if len(text) <= width else text[: width - 3] + "...",
            printable(row["label"]),
            f"{row['score']:.4f}",
            *(["-" if row["task"] is None else str(row["task"])] if with_task else []),
        ]
        for text, row in zip(inputs, rows, strict=True)
    ]
    header = ["input", "label", "score", *(["task"] if with_task else [])]
    widths = [max(len(r[i]) for r in [header, *cells]) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip()
        for r in [header, *cells]
    )


def command_push(args: argparse.Namespace) -> None:
    from promptcl.models import push

    url, files = push(args.run, args.repo, args.private)
    print(f'pushed {", ".join(files)} to {url}\nload it with: promptcl.load("hf:{args.repo}")')


def command_eval(args: argparse.Namespace) -> None:
    from promptcl.models.continual import evaluate_run

    check_output(args.output)
    m = evaluate_run(args.run, args.set, args.device)
    if args.output is not None:
        write_output(args.output, dumps(m, indent=2) + "\n")
    flag = "  (leaks task identity)" if m["leaks_task_identity"] else ""
    print(
        f"{m['method']} from {args.run} on {m['benchmark']} ({m['eval_split']} split, "
        f"{m['test_samples']} samples of {m['tasks_seen']} tasks): avg acc {pct(m['avg_acc'])}  "
        f"union acc {pct(m['union_acc'])}  task-id {pct(m['task_id_acc'])}{flag}\n"
        f"per task: {' '.join(pct(a) for a in m['acc'])}"
        + ("" if args.output is None else f"\nwrote {args.output}")
    )


def command_sweep(args: argparse.Namespace) -> None:
    from promptcl.sweeps import Sweep, machine

    named = [key for key in args.name_keys.split(",") if key]
    sweep = Sweep.from_args(args.protocol, args.config, args.set, args.out, named)
    if args.list:
        for point in sweep.points:
            config = [] if point.config is None else ["--config", point.config]
            print(f"{point.index}  {point.name}  {' '.join([*config, *point.sets])}")
        return
    if args.jobs < 1:
        raise UsageError(f"--jobs {args.jobs} must be >= 1")
    points = sweep.points if args.point is None else [sweep.point(args.point)]
    sweep.open(machine())
    todo = [p for p in points if sweep.status(p) != "finished"]
    print(f"sweep {args.out}: {len(points) - len(todo)} of {len(points)} points finished before")
    hint = f"; continue with: {sweep.command_line()}"
    try:
        if args.jobs > 1:
            failed = sweep.run_parallel(todo, args.jobs, print)
            if failed:
                print(
                    f"promptcl: {len(failed)} point(s) failed: see {failed[0][1]}", file=sys.stderr
                )
                raise SystemExit(1)
            return
        for point in todo:
            try:
                before = sweep.run_point(point)
            except UsageError as err:
                raise UsageError(f"point {point.name}: {err}") from None
            if main_rank():
                print(f"point {point.name}: {'resumed and ' * (before == 'unfinished')}finished")
    except KeyboardInterrupt as stop:
        raise stopped(stop, hint) from None


def command_table(args: argparse.Namespace) -> None:
    from promptcl.sweeps import collect, render

    check_output(args.output)
    for path in args.dirs:
        check_path(path, "a table's folder")
    command = " ".join(["promptcl table", *map(str, args.dirs), "--format", args.format])
    text = render(collect(args.dirs), args.format, command)
    if args.output is None:
        print(text)
        return
    write_output(args.output, text + "\n")
    print(f"wrote {args.output}")


def command_tune(args: argparse.Namespace) -> None:
    from promptcl.sweeps import Tuning

    tuning = Tuning.from_args(
        args.protocol,
        args.config,
        args.set,
        args.range,
        args.out,
        args.trials,
        args.sampler_seed,
    )
    try:
        record = tuning.run(print)
    except KeyboardInterrupt as stop:
        raise stopped(stop, f"; continue with: {tuning.command_line()}") from None
    final = record["final"]
    print(
        f"test {tuning.figure} of the best setting: {pct(final['test'])} (the only test figure; "
        f"run directory: {printable(str(args.out / final['run']))})"
    )


def main(argv: list[str] | None = None) -> None:
    before = signal.getsignal(signal.SIGTERM)
    try:
        signal.signal(signal.SIGTERM, terminate)
    except ValueError:  # not the main thread: the caller handles signals
        before = None
    try:
        dispatch(argv)
    except KeyboardInterrupt as stop:  # at start-up, or a command that writes no run
        raise stopped(stop) from None
    finally:
        if before is not None:
            signal.signal(signal.SIGTERM, before)


def dispatch(argv: list[str] | None) -> None:
    args = build_parser(argv).parse_args(argv)
    try:
        if args.command == "list":
            command_list()
        elif args.command == "b2n":
            command_b2n(args)
        elif args.command == "predict":
            command_predict(args)
        elif args.command == "eval":
            command_eval(args)
        elif args.command == "push":
            command_push(args)
        elif args.command in ("sweep", "table", "tune"):
            {"sweep": command_sweep, "table": command_table, "tune": command_tune}[args.command](
                args
            )
        else:
            command_run(args)
    except UsageError as err:  # every rank raises it (engine.on_main broadcasts); rank 0 says it
        if main_rank():
            print(f"promptcl: error: {printable(str(err))}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
