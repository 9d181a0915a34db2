import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def data_root() -> Path:
    """../shared/data beside the repository (as in CI), or $PROMPTCL_DATA."""
    root = Path(os.environ.get("PROMPTCL_DATA", REPO.parent / "shared" / "data"))
    if not (root / "clinc150" / "data_full.json").is_file():
        pytest.skip(f"no CLINC150 under {root}; set PROMPTCL_DATA to the shared data folder")
    return root
