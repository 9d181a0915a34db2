import pytest
from matplotlib.image import imread

from promptcl.report.plots import (
    plot_accuracy_matrix,
    plot_average_accuracy,
    plot_heatmap,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _check_png(path, min_side=200):
    assert path.is_file()
    data = path.read_bytes()
    assert len(data) > 0
    assert data.startswith(PNG_SIGNATURE)
    height, width = imread(path).shape[:2]
    assert min_side <= height <= 5000
    assert min_side <= width <= 5000
    return height, width


def test_plot_accuracy_matrix_ragged_and_padded(tmp_path):
    ragged = [[90.0], [80.0, 95.0], [70.0, 85.0, 92.0]]
    padded = [[90.0, None, None], [80.0, 95.0, None], [70.0, 85.0, 92.0]]
    plot_accuracy_matrix(ragged, tmp_path / "ragged.png", title="ragged")
    plot_accuracy_matrix(padded, tmp_path / "padded.png")
    _check_png(tmp_path / "ragged.png")
    _check_png(tmp_path / "padded.png")


def test_plot_accuracy_matrix_scales_with_tasks(tmp_path):
    t = 20
    acc = [[100.0 - 2 * (i - j) for j in range(i + 1)] + [None] * (t - i - 1) for i in range(t)]
    plot_accuracy_matrix(acc, tmp_path / "sub" / "acc20.png")
    _, width_20 = _check_png(tmp_path / "sub" / "acc20.png")
    plot_accuracy_matrix([[50.0]], tmp_path / "acc1.png")
    _, width_1 = _check_png(tmp_path / "acc1.png")
    assert width_1 < width_20


def test_plot_accuracy_matrix_rejects_bad_matrix(tmp_path):
    with pytest.raises(ValueError):
        plot_accuracy_matrix([[90.0], [None, 80.0]], tmp_path / "bad.png")


def test_plot_average_accuracy(tmp_path):
    curves = {"l2p": [90.0, 85.0, 80.5], "coda": [91.0, 87.0, 84.0, 82.0]}
    plot_average_accuracy(curves, tmp_path / "avg.png", title="average accuracy")
    _check_png(tmp_path / "avg.png")
    with pytest.raises(ValueError):
        plot_average_accuracy({}, tmp_path / "none.png")


def test_plot_heatmap(tmp_path):
    usage = [[12, 0, 3], [1, 40, 7]]
    plot_heatmap(usage, tmp_path / "usage.png", row_label="expert", col_label="task")
    _check_png(tmp_path / "usage.png")
    with pytest.raises(ValueError):
        plot_heatmap([[1, 2], [3]], tmp_path / "ragged.png", row_label="r", col_label="c")
