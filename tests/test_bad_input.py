"""Bad input to `promptcl run`, `run --resume`, `b2n`, `predict` and `eval`: exit code 2, one
line on stderr naming the problem, no traceback, and nothing created or changed on disk.

Every case runs the real command line in-process inside a copy of one folder (``world``) that
holds the files the cases point at: tiny data, broken YAML, weights and prompts files, a run
stopped after its first task (with damaged copies of it for --resume, predict and eval), one
stopped before it, and a finished b2n run.
"""

import contextlib
import hashlib
import io
import json
import os
import shutil
import stat
import sys

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from promptcl import load_config, run
from promptcl.cli import main
from promptcl.core.checkpoint import RunState, checksum, save_checkpoint
from promptcl.files import run_lock
from promptcl.protocols.b2n import load_b2n_config, run_b2n

CLASSES = ["alarm", "music", "taxi", "weather"]


def texts(n):
    return [(f"{c} please number {i}", c) for c in CLASSES for i in range(n)]


def write_csv(path, rows, header="text,label"):
    path.write_text("\n".join([header, *(f"{t},{y}" for t, y in rows)]) + "\n")


def clinc(folder, data_full, domains='{"home": ["alarm", "music"], "travel": ["taxi", "weather"]}'):
    (folder / "clinc150").mkdir(parents=True)
    (folder / "clinc150" / "domains.json").write_text(domains)
    full = data_full if isinstance(data_full, str | bytes) else json.dumps(data_full)
    write = (folder / "clinc150" / "data_full.json").write_bytes
    write(full if isinstance(full, bytes) else full.encode())


def damaged_runs(w):
    """Copies of the stopped run ``w/run``, each damaged in one way."""
    config = (w / "run" / "config.json").read_text()
    ckpt = "checkpoint/tuner.safetensors"
    tensors = load_file(w / "run" / ckpt)
    with safe_open(str(w / "run" / ckpt), "pt") as f:
        metadata = f.metadata()

    def variant(name, damage):
        shutil.copytree(w / "run", w / name)
        damage(w / name)

    def legacy(state):  # promptcl 0.1: tensors only, state beside them
        def damage(d):
            save_file(tensors, d / ckpt)
            (d / "checkpoint" / "state.json").write_text(state)

        return damage

    def flip_a_byte(d):
        data = bytearray((d / ckpt).read_bytes())
        data[-1] ^= 1
        (d / ckpt).write_bytes(bytes(data))

    def edit_state(d):
        state = metadata["state"].replace('"units_done": 1', '"units_done": 2')
        save_file(tensors, d / ckpt, metadata={**metadata, "state": state})

    def other_shapes(d):  # a valid, checksummed file whose tensors the tuner cannot take
        name = next(iter(tensors))
        grown = {**tensors, name: torch.cat([tensors[name], tensors[name]])}
        save_checkpoint(d / "checkpoint", grown, RunState.from_json(metadata["state"]))

    def restate(change):  # a state that passes the checksum, not the schema
        def damage(d):
            state = json.loads(metadata["state"])
            text = change(state)  # the state's new text, or None when changed in place
            text = text if isinstance(text, str) else json.dumps(state)
            signed = {"state": text, "sha256": checksum(tensors, text)}
            save_file(tensors, d / ckpt, metadata=signed)

        return damage

    def swap_two_classes(d):  # and strip the fingerprint that would show it
        restate(lambda state: state.update(fingerprint=None))(d)
        order = json.loads((d / "class_order.json").read_text())
        names = order["class_order"]
        names[0], names[1] = names[1], names[0]
        (d / "class_order.json").write_text(json.dumps(order))

    (w / "not-a-run").mkdir()
    variant("run-ckpt-no-log", restate(lambda state: state.pop("log")))
    variant("run-ckpt-log-strings", restate(lambda state: state.update(log=["row"])))
    variant("run-ckpt-acc-string", restate(lambda state: state["log"][0].update(acc="high")))
    variant("run-ckpt-deep", restate(lambda state: metadata["state"].replace(
        '"log": ', f'"deep": {DEEP}, "log": ')))  # fmt: skip
    variant("run-unfingerprinted-swapped", swap_two_classes)
    variant("run-order-deep", lambda d: (d / "class_order.json").write_text(DEEP))
    variant("run-config-broken", lambda d: (d / "config.json").write_text("{oops"))
    variant("run-config-list", lambda d: (d / "config.json").write_text("[1, 2]"))
    variant("run-config-lr", lambda d: (d / "config.json").write_text(
        config.replace('"lr": 0.005', '"lr": 0.5')))  # fmt: skip
    variant("run-config-method", lambda d: (d / "config.json").write_text(
        config.replace('"method": "linear"', '"method": "ncm"')))  # fmt: skip
    variant("run-ckpt-truncated", lambda d: (d / ckpt).write_bytes((d / ckpt).read_bytes()[:-9]))
    variant("run-ckpt-empty", lambda d: (d / ckpt).write_bytes(b""))
    variant("run-ckpt-garbage", lambda d: (d / ckpt).write_bytes(b"\x00garbage" * 50))
    variant("run-ckpt-state-edited", edit_state)
    variant("run-ckpt-tensor-edited", flip_a_byte)
    variant("run-ckpt-a-file", lambda d: (shutil.rmtree(d / "checkpoint"),
                                          (d / "checkpoint").write_text("x")))  # fmt: skip
    variant("run-legacy-broken", legacy("{broken"))
    variant("run-legacy-edited", legacy('{"tasks_done": 9, "acc_rows": [[50.0]]}'))
    variant("run-ckpt-other-tensors", other_shapes)


DEEP = "[" * 100_000 + "]" * 100_000  # JSON nested 100,000 deep


def model_folders(folder):
    """Model folders that must be refused before transformers reads them: one naming custom
    code (auto_map) that would create EVIL_MARK, a CLIP config whose text_config is a string,
    one with pickled weights only."""
    from transformers import BertConfig

    custom = folder / "custom-code"
    custom.mkdir(parents=True)
    config = {"model_type": "evil-bert", "architectures": ["EvilModel"]}
    auto_map = {"AutoConfig": "evil.EvilConfig", "AutoModel": "evil.EvilModel"}
    (custom / "config.json").write_text(json.dumps({**config, "auto_map": auto_map}))
    (custom / "evil.py").write_text(f"open({EVIL_MARK!r}, 'w').close()\n")
    (folder / "clip-oops").mkdir()
    clip = {"model_type": "clip", "text_config": "oops", "vision_config": {}}
    (folder / "clip-oops" / "config.json").write_text(json.dumps(clip))
    BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
               intermediate_size=64).save_pretrained(folder / "bin-only")  # fmt: skip
    torch.save({}, folder / "bin-only" / "pytorch_model.bin")


def billion_laughs(levels=5):
    """YAML whose aliases expand to 10**levels nodes."""
    lines = ["l0: &l0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


class Evil:
    def __reduce__(self):
        return (os.system, (f"touch {EVIL_MARK}",))


EVIL_MARK = "PWNED"  # a file that a loaded pickle would create in the working directory


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    w = tmp_path_factory.mktemp("world")
    data = w / "data"
    data.mkdir()
    write_csv(data / "train.csv", texts(3))
    write_csv(data / "test.csv", texts(2))
    (data / "train.jsonl").write_text("".join(json.dumps({"text": t, "label": y}) + "\n"
                                              for t, y in texts(3)))  # fmt: skip
    (data / "latin1.csv").write_bytes("text,label\ncaf\xe9,alarm\n".encode("latin-1"))
    (data / "latin1.jsonl").write_bytes('{"text": "caf\xe9", "label": "a"}\n'.encode("latin-1"))
    write_csv(data / "nocols.csv", texts(1), header="sentence,intent")
    (data / "short.csv").write_text("text,label\nhello,alarm\nlonely\n")
    write_csv(data / "empty.csv", [])
    write_csv(data / "single.csv", texts(1))  # one row per class
    (data / "badline.jsonl").write_text('{"text": "a", "label": "b"}\n{"text": "a",\n')
    (data / "notobject.jsonl").write_text("[1, 2]\n")
    (w / "data-changed").mkdir()
    write_csv(w / "data-changed" / "train.csv", texts(3)[:-3])  # one class fewer
    write_csv(w / "data-changed" / "test.csv", texts(2)[:-2])
    full = {"train": [[t, y] for t, y in texts(2)], "test": [[t, y] for t, y in texts(1)]}
    clinc(data, full)
    clinc(w / "clinc-latin1", json.dumps(full).replace("alarm please", "caf\xe9").encode("latin-1"))
    clinc(w / "clinc-not-json", "{oops")
    clinc(w / "clinc-bad-domains", full, domains="[1]")
    clinc(w / "clinc-bad-pairs", {"train": "oops", "test": []})

    yaml = w / "yaml"
    yaml.mkdir()
    for name, text in {
        "malformed": "train: [1, 2\nseed: {",
        "list": "- method\n- ncm\n",
        "tabs": "train:\n\tlr: 0.1\n",
        "python": f"method: !!python/object/apply:os.system ['touch {EVIL_MARK}']\n",
        "duplicate": "seed: 1\nseed: 2\n",
        "number": "3\n",
        "bomb": billion_laughs(),
        "unknown-key": "trian:\n  lr: 0.1\n",
        "interpolation": "train:\n  lr: ${nope}\n",
    }.items():
        (yaml / f"{name}.yaml").write_text(text)
    (yaml / "latin1.yaml").write_bytes("method: caf\xe9\n".encode("latin-1"))
    (yaml / "folder.yaml").mkdir()

    weights = w / "weights"
    weights.mkdir()
    import timm

    vit = {k: v.contiguous() for k, v in timm.create_model("test_vit").state_dict().items()}
    save_file(vit, weights / "vit.safetensors")
    torch.save(vit, weights / "vit.pth")
    for name in ("garbage.pth", "garbage.safetensors", "garbage.npz"):
        (weights / name).write_bytes(b"\x00garbage" * 100)
    for name in ("vit.safetensors", "vit.pth"):
        blob = (weights / name).read_bytes()
        (weights / f"truncated-{name}").write_bytes(blob[: len(blob) // 2])
    torch.save({"pos_embed": vit["pos_embed"], "evil": Evil()}, weights / "evil.pth")
    save_file({"pos_embed": vit["pos_embed"]}, weights / "partial.safetensors")
    np.savez(weights / "objects.npz", x=np.array([Evil()], dtype=object))

    prompts = w / "prompts"
    prompts.mkdir()
    (prompts / "garbage.safetensors").write_bytes(b"\x00garbage" * 100)
    save_file({"ctx": torch.zeros(1, 1)}, prompts / "other-shapes.safetensors")
    torch.save({"ctx": torch.zeros(4, 32)}, prompts / "prompts.pth")

    model_folders(w / "models")
    (w / "afile").write_text("x")
    os.mkfifo(w / "fifo")
    with contextlib.suppress(PermissionError):  # a character device, where this user may
        os.mknod(w / "device", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    (w / "nl\ndir").mkdir()
    (w / "nl\ndir" / "keep.txt").write_text("x")
    (w / "existing").mkdir()
    (w / "existing" / "keep.txt").write_text("x")
    (w / "locked").mkdir()

    base = [s.split("=", 1) for s in RUN_SETTINGS]
    config = load_config(None, [f"{k}={v}" for k, v in base] + [f"data.root={data}"])
    run(config, w / "run", stop_after=1)
    run(config, w / "run-no-task", stop_after=0)
    saved = (w / "run" / "config.json").read_text()
    (yaml / "other.yaml").write_text(saved.replace('"lr": 0.005', '"lr": 0.9'))
    damaged_runs(w)
    run_b2n(load_b2n_config(None, [*B2N_SETTINGS, f"data.root={data}"]), w / "b2n-run")
    shutil.copytree(w / "b2n-run", w / "b2n-unfinished")
    (w / "b2n-unfinished" / "metrics.json").unlink()
    shutil.copytree(w / "b2n-run", w / "b2n-damaged")
    prompts = w / "b2n-damaged" / "checkpoint" / "tuner.safetensors"
    prompts.write_bytes(prompts.read_bytes()[:-9])
    run_b2n(load_b2n_config(None, [*B2N_SETTINGS, f"data.root={data}", "seed=1"]), w / "b2n-s1")
    shutil.copytree(w / "b2n-run", w / "b2n-other-seed")  # its prompts copied from seed 1's run
    ckpt = "checkpoint/tuner.safetensors"
    shutil.copy(w / "b2n-s1" / ckpt, w / "b2n-other-seed" / ckpt)
    shutil.copytree(w / "b2n-run", w / "b2n-split-deep")
    (w / "b2n-split-deep" / "class_split.json").write_text(DEEP)
    shutil.copytree(w / "b2n-run", w / "b2n-split-edited")
    split = w / "b2n-split-edited" / "class_split.json"
    split.write_text(split.read_text().replace('"template": "', '"template": "x '))
    (w / "inputs").mkdir()
    (w / "inputs" / "empty.txt").write_text("\n \n")
    (w / "inputs" / "surrogate.jsonl").write_text('{"text": "\\ud800"}\n')
    return w


RUN_SETTINGS = ["method=linear", "backbone=tiny-bert", "benchmark=text-csv",
                "data.train_file=train.csv", "data.test_file=test.csv", "data.num_tasks=2",
                "train.epochs=1", "train.progress=false"]  # fmt: skip
B2N_SETTINGS = ["method=coop", "backbone=tiny-bert", "benchmark=clinc150", "shots=1",
                "train.epochs=1", "train.progress=false", "data.root=data"]  # fmt: skip


def sets(settings):
    return [arg for s in settings for arg in ("--set", s)]


def run_args(*settings, out="out"):
    return ["run", *sets([*RUN_SETTINGS, "data.root=data", *settings]), "--out", out]


def vit_args(weights):
    return run_args("backbone=timm:test_vit", f"backbone_weights=weights/{weights}")


def b2n_args(*settings, out="out"):
    return ["b2n", *sets([*B2N_SETTINGS, *settings]), "--out", out]


RUN = [
    # every numeric training key out of range, and the other training keys
    ("lr negative", run_args("train.lr=-0.1"), "train.lr=-0.1 must be"),
    ("lr nan", run_args("train.lr=nan"), "train.lr=nan"),
    ("lr inf", run_args("train.lr=inf"), "train.lr=inf"),
    ("lr zero", run_args("train.lr=0"), "train.lr=0.0 must be > 0"),
    ("batch size 0", run_args("train.batch_size=0"), "train.batch_size=0 must be >= 1"),
    ("eval batch size 0", run_args("train.eval_batch_size=0"), "train.eval_batch_size=0"),
    ("epochs -1", run_args("train.epochs=-1"), "train.epochs=-1 must be >= 0"),
    ("momentum -1", run_args("train.momentum=-1"), "train.momentum=-1.0"),
    ("weight decay -1", run_args("train.weight_decay=-1"), "train.weight_decay=-1.0"),
    ("warmup epochs -1", run_args("train.warmup_epochs=-1"), "train.warmup_epochs=-1"),
    ("warmup lr nan", run_args("train.warmup_lr=nan"), "train.warmup_lr=nan"),
    ("grad clip 0", run_args("train.grad_clip=0"), "train.grad_clip=0.0"),
    ("grad clip inf", run_args("train.grad_clip=inf"), "train.grad_clip=inf"),
    ("optimizer", run_args("train.optimizer=lion"), "train.optimizer='lion'"),
    ("schedule", run_args("train.schedule=linear"), "train.schedule='linear'"),
    ("device", run_args("train.device=cpu"), "Key 'device' not in 'ContinualTrainConfig'"),
    ("accelerator", run_args("train.accelerator=quantum"), "bad train.accelerator"),
    ("devices", run_args("train.devices=[]"), "train.devices=[] must be"),
    ("precision", run_args("train.precision=fp8"), "train.precision='fp8'"),
    ("boolean", run_args("train.mask_logits=maybe"), "train.mask_logits: Value 'maybe' is not"),
    ("typo in a key", run_args("train.epoch=3"), "Key 'epoch' not in"),
    ("seed not a number", run_args("seed=abc"), "could not be converted"),
    ("seed too large", run_args("seed=1000000000000000"),
     "seed=1000000000000000 must be from 0 to 4294967295"),
    ("seed negative", run_args("seed=-1"), "seed=-1 must be from 0"),
    ("seed a fraction", run_args("seed=1.5"), "could not be converted"),
    # every numeric data key out of range, and keys the benchmark does not read
    ("workers -1", run_args("data.workers=-1"), "data.workers=-1 must be >= 0"),
    ("max length 0", run_args("data.max_length=0"), "data.max_length=0 must be >= 3"),
    ("max length above the backbone's", run_args("data.max_length=100000"),
     "more than the 128 token positions of the backbone; set data.max_length <= 128"),
    ("train per class 0", run_args("data.train_per_class=0"), "data.train_per_class=0"),
    ("test per class -1", run_args("data.test_per_class=-1"), "data.test_per_class=-1"),
    ("num tasks 0", run_args("data.num_tasks=0"), "data.num_tasks=0 must be >= 1"),
    ("num tasks > classes", run_args("data.num_tasks=9"), "cannot split 4 classes into 9"),
    ("eval split", run_args("data.eval_split=dev"), "data.eval_split='dev'"),
    ("crop scale reversed", run_args("data.crop_scale=[0.5,0.2]"), "data.crop_scale"),
    ("crop scale one value", run_args("data.crop_scale=[0.5]"), "data.crop_scale"),
    ("order on text-csv", run_args("data.order=5"), "does not read data.order"),
    ("num tasks on a fixed split", run_args("benchmark=clinc150", "data.train_file=null",
                                            "data.test_file=null"), "does not read data.num_tasks"),
    ("train file on builtin", run_args("benchmark=builtin-intents", "data.num_tasks=null"),
     "does not read data.train_file"),
    ("val on builtin", run_args("benchmark=builtin-intents", "data.num_tasks=null",
                                "data.train_file=null", "data.test_file=null",
                                "data.eval_split=val"), "no validation split"),
    # names
    ("method", run_args("method=nope"), "unknown method 'nope'"),
    ("benchmark", run_args("benchmark=nope"), "unknown benchmark 'nope'"),
    ("backbone", run_args("backbone=nope"), "unknown backbone 'nope'"),
    ("timm model", run_args("backbone=timm:nope"), "timm has no model 'nope'"),
    ("hf folder", run_args("backbone=hf:no/such/dir"), "could not load Hugging Face model"),
    ("image backbone, text data", run_args("backbone=tiny-vit"), "reads image"),
    ("hf custom code", run_args("backbone=hf:models/custom-code"),
     "config.json names custom code (auto_map) and promptcl never runs a model's own code"),
    ("clip custom code", run_args("backbone=clip:models/custom-code"), "names custom code"),
    ("hf pickled weights only", run_args("backbone=hf:models/bin-only"),
     "loads safetensors weights only; convert them once"),
    ("clip pickled weights only", run_args("backbone=clip:models/bin-only"),
     "loads safetensors weights only"),
    ("clip text_config not a config", run_args("backbone=clip:models/clip-oops"),
     "could not load CLIP 'models/clip-oops' (config.json: Validation error for field "
     "'text_config'"),
    ("weights of a packaged backbone", run_args("backbone_weights=weights/vit.pth"),
     "backbone_weights is for timm:MODEL"),
    # tuner options
    ("option of no method", run_args("tuner.bogus=1"), "bogus"),
    ("l2p top_k 0", run_args("method=l2p", "tuner.top_k=0"), "top_k"),
    ("l2p pull_coeff -1", run_args("method=l2p", "tuner.pull_coeff=-1"), "pull_coeff >= 0"),
    ("ncm scale 0", run_args("method=ncm", "tuner.scale=0"), "scale must be > 0"),
    ("dualprompt prompt_init -1", run_args("method=dualprompt", "tuner.prompt_init=-1"),
     "prompt_init >= 0"),
    ("dualprompt block 7 of 2", run_args("method=dualprompt", "tuner.g_blocks=[0,7]"),
     "g_blocks"),
    ("hash length 0", run_args("method=hash", "tuner.length=0"), "length must be >= 1"),
    ("hash tii lr nan", run_args("method=hash", "tuner.tii.lr=nan"),
     "tuner.tii.lr=nan must be a finite number"),
    ("hide temperature 0", run_args("method=hide", "tuner.contrast_temperature=0"),
     "contrast_temperature must be > 0"),
    ("softtf key_pull_coeff -1", run_args("method=softtf", "tuner.key_pull_coeff=-1"),
     "key_pull_coeff must be >= 0"),
    ("softtf base", run_args("method=softtf", "tuner.base=ncm"), "base must be one of"),
    ("tuner a list", run_args("tuner=[1,2]"), "bad config"),
    ("interpolation", run_args("train.lr=${nope}"), "Interpolation key 'nope' not found"),
    ("set a python tag", run_args(f"method=!!python/object/apply:os.system ['touch {EVIL_MARK}']"),
     "bad --set value (could not determine a constructor for the tag"),
    ("set a recursive alias", run_args("tuner=&a [*a]"),
     "bad --set value (YAML recursive aliases are not supported"),
    ("set without =", run_args("train.lr"), "is not key=value"),
    ("unknown section", run_args("datta.root=x"), "datta"),
    # data files
    ("no data root", run_args("benchmark=clinc150", "data.num_tasks=null", "data.root=null",
                              "data.train_file=null", "data.test_file=null"), "needs a data root"),
    ("data root missing", run_args("data.root=nowhere"), "not found"),
    ("train file missing", run_args("data.train_file=missing.csv"), "missing.csv not found"),
    ("csv not utf-8", run_args("data.train_file=latin1.csv"), "is not UTF-8 text (byte 0xe9"),
    ("test csv not utf-8", run_args("data.test_file=latin1.csv"), "is not UTF-8"),
    ("csv columns", run_args("data.train_file=nocols.csv"), "has no columns 'text', 'label'"),
    ("csv short row", run_args("data.train_file=short.csv"), "fewer fields than its header"),
    ("csv no rows", run_args("data.train_file=empty.csv"), "holds no samples"),
    ("csv no rows under val", run_args("data.train_file=empty.csv", "data.eval_split=val"),
     "empty.csv holds no samples"),
    ("val from one row per class", run_args("data.train_file=single.csv", "data.eval_split=val"),
     "single.csv: data.eval_split=val holds out 10% of each class's training samples, and no "
     "class has two"),
    ("jsonl given as csv", run_args("data.train_file=train.jsonl"),
     "train.jsonl holds JSON lines, not CSV; pass it with --set benchmark=text-jsonl"),
    ("jsonl not utf-8", run_args("benchmark=text-jsonl", "data.train_file=latin1.jsonl"),
     "is not UTF-8"),
    ("jsonl bad line", run_args("benchmark=text-jsonl", "data.train_file=badline.jsonl"),
     "line 2 is not a JSON object"),
    ("jsonl not objects", run_args("benchmark=text-jsonl", "data.train_file=notobject.jsonl"),
     "line 1 is not a JSON object"),
    *[
        (name, run_args("benchmark=clinc150", "data.num_tasks=null", "data.train_file=null",
                        "data.test_file=null", f"data.root={root}"), message)
        for name, root, message in [
            ("clinc150 not utf-8", "clinc-latin1", "is not UTF-8"),
            ("clinc150 not json", "clinc-not-json", "is not valid JSON"),
            ("clinc150 domains", "clinc-bad-domains", "must map each domain"),
            ("clinc150 pairs", "clinc-bad-pairs", "must be a list of [text, label] pairs"),
        ]
    ],
    # config files
    *[
        (f"yaml {name}", ["run", "--config", f"yaml/{name}.yaml", *run_args()[1:]], message)
        for name, message in [
            ("malformed", "is not valid YAML (did not find expected ',' or ']' at line 2"),
            ("list", "must hold key: value lines"),
            ("tabs", "at line 2, column 1, a tab: YAML indents with spaces"),
            ("python", "could not determine a constructor for the tag"),
            ("duplicate", "found duplicate key seed"),
            ("number", "must hold key: value lines"),
            ("bomb", "exceeds the configured limit"),
            ("unknown-key", "Key 'trian' not in 'RunConfig'"),
            ("interpolation", "Interpolation key 'nope' not found"),
            ("latin1", "is not UTF-8"),
            ("folder", "not found"),
            ("missing", "config file yaml/missing.yaml not found"),
        ]
    ],
    # weights files of a timm backbone
    *[
        (f"weights {name}", vit_args(name), message)
        for name, message in [
            ("garbage.pth", "promptcl never unpickles"),
            ("garbage.safetensors", "Error while deserializing header"),
            ("garbage.npz", "could not read"),
            ("truncated-vit.pth", "failed reading zip archive"),
            ("truncated-vit.safetensors", "Error while deserializing header"),
            ("evil.pth", "promptcl never unpickles"),
            ("objects.npz", "cannot load weights/objects.npz into test_vit"),
            ("partial.safetensors", "lacks"),
            ("missing.pth", "weights file weights/missing.pth not found"),
        ]
    ],
    # --out
    ("out is a file", run_args(out="afile"), "afile is a file"),
    ("out under a file", run_args(out="afile/run"), "afile is not a writable folder"),
    ("out exists", run_args(out="existing"), "existing already exists; pass --resume"),
    ("out not creatable", run_args(out="/proc/promptcl/run"), "pass another --out"),
    ("out name too long", run_args(out="x" * 300), "(File name too long); pass another"),
    ("out with a newline", run_args(out="nl\ndir"), "nl\\ndir already exists; pass --resume"),
    ("out and resume", ["run", "--resume", "run", "--out", "elsewhere"], "different directories"),
    ("out held by a live run", run_args(out="locked"), "locked is in use by process"),
]  # fmt: skip


def resume_args(run_dir, *args):
    return ["run", "--resume", run_dir, *args]


RESUME = [
    ("resume nothing", resume_args("nowhere"), "not a promptcl run directory"),
    ("resume a folder", resume_args("not-a-run"), "not a promptcl run directory"),
    ("config.json broken", resume_args("run-config-broken"), "config.json is not valid YAML"),
    ("config.json a list", resume_args("run-config-list"), "must hold key: value lines"),
    ("config.json edited", resume_args("run-config-lr"), "config.json or the data changed"),
    ("config.json method", resume_args("run-config-method"), "config.json or the data changed"),
    ("data changed", resume_args("run", "--set", "data.root=data-changed"),
     "config.json or the data changed"),
    *[
        (f"checkpoint {damage}", resume_args(f"run-{damage}"), "is damaged")
        for damage in ["ckpt-truncated", "ckpt-empty", "ckpt-garbage", "ckpt-state-edited",
                       "ckpt-tensor-edited", "ckpt-a-file", "legacy-broken", "legacy-edited",
                       "ckpt-no-log", "ckpt-log-strings", "ckpt-acc-string", "ckpt-deep"]
    ],
    ("checkpoint unfingerprinted, classes swapped", resume_args("run-unfingerprinted-swapped"),
     "config.json or the data changed"),
    ("another value", resume_args("run", "--set", "train.lr=0.9"), "differs in train.lr"),
    ("another file", resume_args("run", "--config", "yaml/other.yaml"), "differs in train.lr"),
    ("resume a locked run", resume_args("run"), "run is in use by process"),
]  # fmt: skip

B2N = [
    ("b2n lr negative", b2n_args("train.lr=-1"), "train.lr=-1.0 must be"),
    ("b2n batch size 0", b2n_args("train.batch_size=0"), "train.batch_size=0"),
    ("b2n epochs -1", b2n_args("train.epochs=-1"), "train.epochs=-1"),
    ("b2n shots 0", b2n_args("shots=0"), "shots=0 must be >= 1"),
    ("b2n logit scale -1", b2n_args("logit_scale=-1"), "logit_scale=-1.0 must be > 0"),
    ("b2n logit scale nan", b2n_args("logit_scale=nan"), "logit_scale=nan"),
    ("b2n method", b2n_args("method=nope"), "unknown dual-encoder method 'nope'"),
    ("b2n benchmark", b2n_args("benchmark=nope"), "unknown base-to-novel benchmark 'nope'"),
    ("b2n transfer", b2n_args("transfer=[nope]"), "unknown base-to-novel benchmark 'nope'"),
    ("b2n continual key", b2n_args("train.mask_logits=false"), "mask_logits"),
    ("b2n stream key", b2n_args("data.num_tasks=2"), "num_tasks"),
    ("b2n n_ctx -1", b2n_args("tuner.n_ctx=-1"), "n_ctx=-1 must be >= 0"),
    ("b2n depth 0", b2n_args("method=maple", "tuner.depth=0"), "depth=0 must be >= 1"),
    ("b2n seed too large", b2n_args("seed=1000000000000000"), "seed=1000000000000000 must be"),
    ("b2n hf custom code", b2n_args("backbone=hf:models/custom-code"), "names custom code"),
    ("b2n clip text_config not a config", b2n_args("backbone=clip:models/clip-oops"),
     "Validation error for field 'text_config'"),
    ("b2n clip pickled weights only", b2n_args("backbone=clip:models/bin-only"),
     "loads safetensors weights only"),
    ("b2n image backbone", b2n_args("backbone=tiny-vit"), "has no text encoder"),
    ("b2n no data root", b2n_args("data.root=null"), "needs a data root"),
    ("b2n data root missing", b2n_args("data.root=nowhere"), "not found"),
    ("b2n data not utf-8", b2n_args("data.root=clinc-latin1"), "is not UTF-8"),
    ("b2n no val split", b2n_args("data.eval_split=val"), "lacks the 'train' or 'val' list"),
    ("b2n yaml", ["b2n", "--config", "yaml/malformed.yaml", *b2n_args()[1:]], "not valid YAML"),
    ("b2n prompts missing", [*b2n_args(), "--prompts", "prompts/missing.safetensors"],
     "not found"),
    ("b2n prompts garbage", [*b2n_args(), "--prompts", "prompts/garbage.safetensors"],
     "is not a safetensors file"),
    ("b2n prompts pth", [*b2n_args(), "--prompts", "prompts/prompts.pth"],
     "is not a safetensors file"),
    ("b2n prompts of other options", [*b2n_args(), "--prompts",
                                      "prompts/other-shapes.safetensors"], "does not hold coop"),
    ("b2n out is a file", b2n_args(out="afile"), "afile is a file"),
    ("b2n out under a file", b2n_args(out="afile/run"), "afile is not a writable folder"),
    ("b2n out exists", b2n_args(out="existing"), "existing already exists; pass --resume existing"),
    ("b2n out held by a live run", b2n_args(out="locked"), "locked is in use by process"),
]  # fmt: skip


def predict_args(run_dir, *args):
    return ["predict", run_dir, *(args or ["--text", "alarm please"])]


PREDICT = [
    ("predict nothing", ["predict", "run"], "nothing to predict"),
    ("predict no run", predict_args("nowhere"), "nowhere is not a promptcl run directory"),
    ("predict a folder", predict_args("not-a-run"), "not-a-run is not a promptcl run directory"),
    ("predict no finished task", predict_args("run-no-task"), "has not finished a task yet"),
    ("predict config.json broken", predict_args("run-config-broken"), "is not valid YAML"),
    ("predict config.json edited", predict_args("run-config-lr"),
     "config.json or class_order.json changed after the checkpoint"),
    ("predict config.json method", predict_args("run-config-method"),
     "config.json or class_order.json changed after the checkpoint"),
    *[
        (f"predict checkpoint {damage}", predict_args(f"run-{damage}"), "is damaged")
        for damage in ["ckpt-truncated", "ckpt-empty", "ckpt-garbage", "ckpt-state-edited",
                       "ckpt-tensor-edited", "ckpt-a-file", "legacy-broken", "legacy-edited",
                       "ckpt-no-log", "ckpt-log-strings", "ckpt-deep"]
    ],
    ("predict unfingerprinted, classes swapped", predict_args("run-unfingerprinted-swapped"),
     "config.json or class_order.json changed after the checkpoint"),
    ("predict class order deep", predict_args("run-order-deep"),
     "class_order.json is not valid JSON (nested deeper than 64 levels)"),
    ("predict b2n class split deep", predict_args("b2n-split-deep"),
     "class_split.json is not valid JSON (nested deeper than 64 levels)"),
    ("predict b2n prompts of another seed", predict_args("b2n-other-seed"),
     "config.json or class_split.json changed after the checkpoint"),
    ("predict tensors of other shapes", predict_args("run-ckpt-other-tensors"),
     "the checkpoint does not fit linear as the config builds it"),
    ("predict input missing", predict_args("run", "--input", "inputs/missing.txt"),
     "cannot read inputs/missing.txt"),
    ("predict input not utf-8", predict_args("run", "--input", "data/latin1.csv"), "is not UTF-8"),
    ("predict input empty", predict_args("run", "--input", "inputs/empty.txt"),
     "holds no inputs"),
    ("predict input bad json line", predict_args("run", "--input", "data/badline.jsonl"),
     'line 2 is not a JSON object with a "text" string'),
    ("predict text not utf-8", predict_args("run", "--text", "caf\udce9"),
     "text 1 ('caf\\udce9') is not valid Unicode: character 3 is a lone surrogate"),
    ("predict jsonl lone surrogate", predict_args("run", "--input", "inputs/surrogate.jsonl"),
     "is not valid Unicode"),
    ("predict output a folder", predict_args("run", "--text", "x", "--output", "existing"),
     "existing is a folder"),
    ("predict output name too long",
     predict_args("run", "--text", "x", "--output", "y" * 300), "(File name too long)"),
    ("predict output a pipe", predict_args("run", "--text", "x", "--output", "fifo"),
     "fifo is not a regular file"),
    ("predict output a device", predict_args("run", "--text", "x", "--output", "device"),
     "device is not a regular file"),
    ("predict output read-only", predict_args("run", "--text", "x", "--output", "/sys/p.jsonl"),
     "/sys is not writable"),
    ("predict output in no folder", predict_args("run", "--text", "x", "--output", "no/p.jsonl"),
     "no does not exist"),
    ("predict batch size 0", predict_args("run", "--text", "x", "--batch-size", "0"),
     "--batch-size 0 must be >= 1"),
    ("predict device", predict_args("run", "--text", "x", "--device", "quantum"),
     "unknown device 'quantum'"),
    ("predict class names of a continual run",
     predict_args("run", "--text", "x", "--class-names", "a,b"), "class_names is for b2n runs"),
    ("predict b2n class named twice",
     predict_args("b2n-run", "--text", "x", "--class-names", "a,b,a"), "'a' is given twice"),
    ("predict b2n no class names", predict_args("b2n-run", "--text", "x", "--class-names", ",,"),
     "non-empty list of non-empty names"),
    ("predict b2n unfinished", predict_args("b2n-unfinished"), "lacks metrics.json"),
    ("predict b2n checkpoint damaged", predict_args("b2n-damaged"), "is damaged"),
    ("predict b2n class split edited", predict_args("b2n-split-edited"),
     "config.json or class_split.json changed after the checkpoint"),
    ("b2n prompts damaged", [*b2n_args(), "--prompts", "b2n-damaged"], "is damaged"),
]  # fmt: skip

EVAL = [
    ("eval a key of the model", ["eval", "run", "--set", "method=ncm"],
     "eval changes only benchmark, data.*"),
    ("eval set without =", ["eval", "run", "--set", "data.root"], "is not key=value"),
    ("eval benchmark", ["eval", "run", "--set", "benchmark=nope"], "unknown benchmark 'nope'"),
    ("eval data root missing", ["eval", "run", "--set", "data.root=nowhere"], "not found"),
    ("eval other classes", ["eval", "run", "--set", "data.root=data-changed"],
     "the classes of text-csv do not match the run's (missing: 'weather')"),
    ("eval no finished task", ["eval", "run-no-task"], "has not finished a task yet"),
    ("eval tensors of other shapes", ["eval", "run-ckpt-other-tensors"], "does not fit linear"),
    ("eval a b2n run", ["eval", "b2n-run"], "is a base-to-novel run"),
    ("eval output a folder", ["eval", "run", "--output", "existing"], "existing is a folder"),
    ("eval device", ["eval", "run", "--device", "quantum"], "unknown device 'quantum'"),
    ("eval output a pipe", ["eval", "run", "--output", "fifo"], "fifo is not a regular file"),
    ("eval output read-only", ["eval", "run", "--output", "/sys/e.json"], "/sys is not writable"),
]  # fmt: skip

CASES = RUN + RESUME + B2N + PREDICT + EVAL


def snapshot(root):
    """Every path under ``root``; a file's digest and modification time. (A folder's time is
    left out: the lock file that a run holds while it checks a run directory comes and goes.)"""
    return {
        str(path.relative_to(root)): (hashlib.sha256(path.read_bytes()).hexdigest(),
                                      path.stat().st_mtime_ns) if path.is_file() else "folder"
        for path in sorted(root.rglob("*"))
    }  # fmt: skip


def test_the_cases_differ_from_commands_that_work(world, tmp_path, monkeypatch):
    assert len(CASES) >= 80 and len({name for name, _, _ in CASES}) == len(CASES)
    shutil.copytree(world, tmp_path / "w", copy_function=os.link)
    monkeypatch.chdir(tmp_path / "w")
    main(run_args(out="new-run"))
    main(b2n_args(out="new-b2n"))
    main(["run", "--resume", "run"])
    for done in ("new-run", "new-b2n", "run"):
        assert (tmp_path / "w" / done / "metrics.json").is_file()
    main(["predict", "run", "--text", "alarm please", "--output", "predictions.jsonl"])
    main(["predict", "b2n-run", "--text", "alarm please", "--class-names", "alarm,weather"])
    main(["eval", "run", "--set", "benchmark=clinc150", "--set", "data.num_tasks=null",
          "--set", "data.train_file=null", "--set", "data.test_file=null"])  # fmt: skip


@pytest.mark.parametrize(("args", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_exits_2_with_one_line_and_changes_nothing(
    world, tmp_path, monkeypatch, capsys, args, message
):
    w = tmp_path / "w"
    shutil.copytree(world, w, copy_function=os.link)  # a change in place shows in the snapshot
    monkeypatch.chdir(w)
    monkeypatch.delenv("PROMPTCL_DATA", raising=False)
    if args[-1].startswith(("/proc/", "/sys/")) and not sys.platform.startswith("linux"):
        pytest.skip("/proc and /sys are Linux's")
    if "device" in args and not (w / "device").exists():
        pytest.skip("this user cannot make a character device")
    monkeypatch.setattr(sys, "stdin", io.StringIO("y\n" * 3))  # an answer to any question
    locked = "locked" if "locked" in args else "run" if "in use" in message else None
    with run_lock(w / locked) if locked else contextlib.nullcontext():
        before = snapshot(w)
        with pytest.raises(SystemExit) as stop:
            main(list(args))
        after = snapshot(w)
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert stop.value.code == 2, err
    assert len(lines) == 1 and lines[0].startswith("promptcl: error: "), err
    assert "Traceback" not in err and out == ""
    assert message in lines[0], lines[0]
    assert after == before and sys.stdin.tell() == 0  # stdin is never read
    assert not (w / EVIL_MARK).exists() and not (world / EVIL_MARK).exists()
