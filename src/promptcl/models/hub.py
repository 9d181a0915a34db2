"""Runs on the Hugging Face Hub, as peft shares adapters.

``promptcl push RUN_DIR OWNER/NAME`` uploads the files ``promptcl.load`` reads (config.json,
the class file, metrics.json and the checkpoint: JSON and safetensors, nothing pickled) and a
model card, README.md, written from them. ``promptcl.load("hf:OWNER/NAME[@REVISION]")`` and
``promptcl predict hf:OWNER/NAME`` download those files only (into huggingface_hub's cache;
with HF_HUB_OFFLINE=1 from the cache alone) and load them as a local run is loaded: the
checkpoint's checksum and the fingerprint of config.json and the class file are verified, and
no other file of the repository is fetched or read.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from promptcl.backbones import hub_model
from promptcl.config import migrate
from promptcl.core.rundir import LOADED_FILES, RunDir
from promptcl.data import data_license
from promptcl.errors import UsageError
from promptcl.models.base import TrainedModel, read_json_file
from promptcl.protocols.b2n import B2NExperiment
from promptcl.protocols.continual import Experiment

HUB = "hf:"
REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")  # OWNER/NAME
CARD = "README.md"
COMMANDS = {p.kind: p.command for p in (Experiment, B2NExperiment)}  # kind -> its CLI command
# the card's figures of each kind of run: (metrics.json key, what the card calls it)
FIGURES = {
    "continual": (
        ("faa", "final average accuracy (FAA, %)"),
        ("caa", "cumulative average accuracy (CAA, %)"),
        ("fm", "forgetting (FM)"),
        ("bwt", "backward transfer (BWT)"),
        ("union_acc", "accuracy over all test samples (%)"),
        ("task_id_acc", "task-identity accuracy (%)"),
        ("trainable_params", "trained parameters"),
    ),
    "base-to-novel": (
        ("base_acc", "base-class accuracy (%)"),
        ("novel_acc", "novel-class accuracy (%)"),
        ("hm", "harmonic mean (HM)"),
        ("trainable_params", "trained parameters"),
    ),
}


def is_hub_run(source: Any) -> bool:
    """Whether ``source`` names a run on the Hub (``hf:OWNER/NAME[@REVISION]``)."""
    return isinstance(source, str) and source.startswith(HUB)


def hub_repo(source: str) -> tuple[str, str | None]:
    """``hf:OWNER/NAME[@REVISION]`` as (OWNER/NAME, REVISION or None); a one-line error else."""
    repo, at, revision = source.removeprefix(HUB).partition("@")
    if not REPO_ID.fullmatch(repo) or (at and not revision):
        raise UsageError(f"{source!r} is not hf:OWNER/NAME or hf:OWNER/NAME@REVISION; fix it")
    return repo, revision or None


def download(source: str) -> Path:
    """The folder holding the files ``load`` reads of the run ``source`` names on the Hub."""
    from huggingface_hub import snapshot_download

    repo, revision = hub_repo(source)
    try:
        folder = snapshot_download(
            repo, revision=revision, allow_patterns=[*LOADED_FILES, *migrate.LEGACY_FILES]
        )
    except (OSError, ValueError) as err:  # not found, offline and not cached, no access
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UsageError(
            f"cannot download {source} ({reason}); check the name and revision, the network "
            "and HF_TOKEN (offline: HF_HUB_OFFLINE=1 reads huggingface_hub's cache only)"
        ) from None
    if not (Path(folder) / "config.json").is_file():
        raise UsageError(
            f"{source} holds no promptcl run (no config.json); pass a repository made by "
            "promptcl push"
        )
    return Path(folder)


def push(run_dir: str | Path, repo: str, private: bool = False) -> tuple[str, list[str]]:
    """Upload the finished run at ``run_dir`` to the Hub repository ``repo`` (OWNER/NAME,
    created when missing, ``private`` then): the files ``load`` reads and a model card. The
    run is loaded first, with every check of ``load``. Returns the repository's URL and the
    uploaded paths."""
    from huggingface_hub import CommitOperationAdd, HfApi

    from promptcl.models import load  # the package's __init__ imports this module

    path = Path(run_dir)
    if not REPO_ID.fullmatch(repo):
        raise UsageError(f"{repo!r} is not a Hub repository name; pass OWNER/NAME")
    run = RunDir(path)
    kind = run.kind()
    if not (path / "metrics.json").is_file():
        raise UsageError(
            f"{path} has not finished (no metrics.json); push it once it has, or continue it "
            f"with promptcl {COMMANDS[kind]} --resume {path}"
        )
    card = model_card(load(path, "cpu"), run.read_config(), repo)
    files = {f.relative_to(path).as_posix(): f for f in run.files_to_load()}
    operations = [CommitOperationAdd(name, str(file)) for name, file in files.items()]
    operations.append(CommitOperationAdd(CARD, card.encode()))
    api = HfApi()
    try:
        url = api.create_repo(repo, private=private, exist_ok=True)
        api.create_commit(repo, operations, commit_message=f"promptcl push of {path.name}")
    except (OSError, ValueError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UsageError(
            f"cannot push to {repo} ({reason}); log in (hf auth login, or set HF_TOKEN) with "
            "write access to OWNER"
        ) from None
    return str(url), [*files, CARD]


def model_card(model: TrainedModel, config: dict[str, Any], repo: str) -> str:
    """README.md of a pushed run: YAML front matter for the Hub (library, tags, base model,
    data set, metrics), then method, backbone, benchmark, figures, command, class names and
    the data's licence."""
    kind, method, benchmark = config["kind"], config["method"], config["benchmark"]
    backbone, metrics = config["backbone"], read_json_file(model.path / "metrics.json", "figures")
    task = "text-classification" if model.modality == "text" else "image-classification"
    tags = ["promptcl", "continual-learning" if kind == "continual" else "base-to-novel"]
    meta: dict[str, Any] = {
        "library_name": "promptcl",
        "pipeline_tag": task,
        "tags": [*tags, method, "prompt-tuning"],
        "datasets": [benchmark],
        "metrics": ["accuracy"],
    }
    base = hub_model(backbone)
    if base is not None:
        meta["base_model"] = base
    rows = [
        f"| {label} | {fmt(metrics[key])} |"
        for key, label in FIGURES[kind]
        if metrics.get(key) is not None
    ]
    rows += [f"| transfer to {k} (%) | {fmt(v)} |" for k, v in metrics.get("transfer", {}).items()]
    example = '"a text to classify"' if model.modality == "text" else '"photo.jpg"'
    cli_input = '--text "a text to classify"' if model.modality == "text" else "--input paths.txt"
    licence = data_license(benchmark)
    lines = [
        "---",
        yaml.safe_dump(meta, sort_keys=False).strip(),
        "---",
        "",
        f"# {repo}",
        "",
        f"A promptcl {kind} run: method `{method}` on the frozen backbone `{backbone}`"
        + (f" ([{base}](https://huggingface.co/{base}))" if base else "")
        + f", benchmark `{benchmark}`, seed {config['seed']}"
        + (f", promptcl {model.version}" if model.version else "")
        + ". The repository holds only what was trained "
        "(`checkpoint/tuner.safetensors`) and the run's JSON files; the backbone loads from "
        "its own source.",
        "",
        "## Use",
        "",
        "```python",
        "import promptcl",
        "",
        f'model = promptcl.load("hf:{repo}")',
        f"print(model.predict([{example}]))",
        "```",
        "",
        f"or `promptcl predict hf:{repo} {cli_input}` (`pip install promptcl`).",
        "",
        "## Results",
        "",
        f"On the {metrics.get('eval_split', 'test')} split of `{benchmark}`:",
        "",
        "| figure | value |",
        "|---|---|",
        *rows,
        "",
        "## Training",
        "",
        "With this repository's config.json:",
        "",
        "```",
        f"promptcl {COMMANDS[kind]} --config config.json"
        + (" --set data.root=YOUR_DATA_FOLDER" if config.get("data", {}).get("root") else ""),
        "```",
        "",
        "## Classes",
        "",
        *class_lines(model.path, kind),
        "",
        "## Data",
        "",
        f"`{benchmark}`: licence "
        + (f"`{licence}`." if licence else "not known to promptcl; see the data set's terms."),
        "",
    ]
    return "\n".join(lines)


def class_lines(path: Path, kind: str) -> list[str]:
    """The run's class names: per task (continual) or base and novel (base-to-novel)."""
    if kind == "continual":
        tasks = read_json_file(path / "class_order.json", "the class order and tasks")["tasks"]
        return [f"- task {t}: {', '.join(names)}" for t, names in enumerate(tasks, 1)]
    split = read_json_file(path / "class_split.json", "the base and novel classes")
    return [f"- {part}: {', '.join(split[part])}" for part in ("base", "novel")]


def fmt(value: Any) -> str:
    return f"{value:.2f}" if isinstance(value, float) else str(value)
