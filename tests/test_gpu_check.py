"""benchmarks/gpu_check.py on the CPU with tiny backbones, so that the GPU check cannot rot: every
part runs and passes, the table and the JSON file hold every row."""

import json
import os
import subprocess
import sys

import pytest
import torch
from conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
import gpu_check  # noqa: E402 (benchmarks/ is no package)


def test_gpu_check_passes_on_the_cpu_with_tiny_backbones(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    script = REPO / "benchmarks" / "gpu_check.py"
    done = subprocess.run(
        [sys.executable, str(script), "--out", str(tmp_path), "--device", "cpu", "--tiny"],
        capture_output=True, text=True, env=env, timeout=1800,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    rows = {(p["name"], p["variant"]): p for p in report["speed"]}
    names = ["floor", "floor + query", "dualprompt", "hash", "hide", "softtf", "coda"]
    variants = ["fp32", "bf16-mixed", "bf16-true", "bf16-mixed compiled"]
    assert set(rows) == {(n, v) for n in names for v in variants}
    for (_, variant), part in rows.items():
        if variant.endswith("compiled"):  # CUDA only in the check
            assert part["status"] == "skipped"
        else:
            assert part["status"] == "ok" and part["batch"] == 16 and part["samples_per_s"] > 0
            assert part["peak_mib"] is None  # no GPU memory on the CPU
    assert [(p["part"], p["status"]) for p in report["runs"]] == [
        ("hash, 2 tasks", "ok"),
        ("mpl b2n", "ok"),
    ]
    table = (tmp_path / "gpu_check.md").read_text()
    assert table.count("| ok |") == 21 + 2 and "| floor + query | bf16-true | 16 |" in table
    assert (tmp_path / "hash" / "metrics.json").is_file() and (
        tmp_path / "mpl" / "metrics.json"
    ).is_file()


@pytest.fixture
def threads():
    """The check sets one torch thread with --tiny: the tests after this one keep theirs."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_a_failing_part_is_recorded_the_rest_runs_and_the_check_exits_1(
    tmp_path, monkeypatch, threads
):
    def broken(out, device):
        raise RuntimeError("CUDA error: an illegal memory access\nmore lines")

    monkeypatch.setattr(gpu_check, "METHODS", ["dualprompt"])
    monkeypatch.setattr(gpu_check, "FLOORS", [])
    monkeypatch.setattr(gpu_check, "VARIANTS", {"fp32": ["train.precision=32-true"]})
    monkeypatch.setattr(gpu_check, "check_mpl_b2n", broken)
    monkeypatch.setattr(sys, "argv", ["gpu_check.py", "--out", str(tmp_path), "--device", "cpu",
                                      "--tiny", "--repeats", "1"])  # fmt: skip
    with pytest.raises(SystemExit) as stop:
        gpu_check.main()
    assert stop.value.code == 1
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert [p["status"] for p in report["speed"]] == ["ok"]
    assert [(p["part"], p["status"]) for p in report["runs"]] == [
        ("hash, 2 tasks", "ok"),
        ("mpl b2n", "failed"),
    ]
    assert report["runs"][1]["error"] == "RuntimeError: CUDA error: an illegal memory access"
    assert (
        "| mpl b2n | failed | RuntimeError: CUDA error" in (tmp_path / "gpu_check.md").read_text()
    )
