"""Continual-learning metrics computed from an accuracy matrix.

``acc[i][j]`` is the accuracy (%) on task ``j``'s test set after training task ``i`` (0-based),
defined for ``j <= i``. Rows may be ragged (row ``i`` holds ``i + 1`` numbers) or full length
with ``None`` beyond the diagonal; entries beyond the diagonal are ignored.

FAA and CAA are named as in HiDe-Prompt (Wang et al., NeurIPS 2023); CAA is iCaRL's average
incremental accuracy (Rebuffi et al., CVPR 2017). Forgetting follows Chaudhry et al., RWalk
(ECCV 2018); backward transfer follows Lopez-Paz & Ranzato, GEM (NeurIPS 2017).
"""

from __future__ import annotations

from collections.abc import Sequence
from statistics import fmean

AccuracyMatrix = Sequence[Sequence[float | None]]


def lower_triangle(acc: AccuracyMatrix) -> list[list[float]]:
    """Validate ``acc`` and return its lower triangle as ragged rows (row ``i`` has ``i + 1``)."""
    if len(acc) == 0:
        raise ValueError("accuracy matrix is empty")
    rows = []
    for i, row in enumerate(acc):
        if len(row) < i + 1:
            raise ValueError(f"accuracy matrix row {i} has {len(row)} entries, expected >= {i + 1}")
        values = list(row[: i + 1])
        if any(v is None for v in values):
            j = values.index(None)
            raise ValueError(f"accuracy matrix entry [{i}][{j}] is None inside the lower triangle")
        rows.append([float(v) for v in values])
    return rows


def average_accuracy(row: Sequence[float]) -> float:
    """The average accuracy of one evaluation: the mean over the tasks it scored (``avg_i`` of
    row ``i``; a joint run's row scores every task)."""
    if len(row) == 0:
        raise ValueError("no task was scored")
    return fmean(row)


def average_accuracies(acc: AccuracyMatrix) -> list[float]:
    """Average accuracy after each task: ``avg_i = mean_{j <= i} acc[i][j]``."""
    return [fmean(row) for row in lower_triangle(acc)]


def final_average_accuracy(acc: AccuracyMatrix) -> float:
    """Final average accuracy (FAA): ``avg_{T-1}``, the average over all tasks after the last."""
    return average_accuracies(acc)[-1]


def cumulative_average_accuracy(acc: AccuracyMatrix) -> float:
    """Cumulative average accuracy (CAA): ``mean_i avg_i``, averaged over the task sequence."""
    return fmean(average_accuracies(acc))


def forgetting(acc: AccuracyMatrix) -> float | None:
    """Forgetting measure (FM, Chaudhry et al. 2018).

    ``FM = mean_{j < T-1} max_{j <= i < T-1} (acc[i][j] - acc[T-1][j])``; ``None`` when ``T == 1``.
    """
    rows = lower_triangle(acc)
    last = len(rows) - 1
    if last == 0:
        return None
    return fmean(max(rows[i][j] for i in range(j, last)) - rows[last][j] for j in range(last))


def backward_transfer(acc: AccuracyMatrix) -> float | None:
    """Backward transfer (BWT, Lopez-Paz & Ranzato 2017).

    ``BWT = mean_{j < T-1} (acc[T-1][j] - acc[j][j])``; ``None`` when ``T == 1``.
    """
    rows = lower_triangle(acc)
    last = len(rows) - 1
    if last == 0:
        return None
    return fmean(rows[last][j] - rows[j][j] for j in range(last))


def accuracy(correct: int, total: int) -> float:
    """Accuracy in percent: ``100 * correct / total``."""
    if total <= 0:
        raise ValueError(f"total must be positive, got {total}")
    if not 0 <= correct <= total:
        raise ValueError(f"correct must be in [0, {total}], got {correct}")
    return 100.0 * correct / total


def union_accuracy(correct_per_task: Sequence[int], total_per_task: Sequence[int]) -> float:
    """Accuracy on the union of all test sets: ``100 * sum(correct) / sum(total)``.

    Unlike the mean of per-task accuracies, this weights each task by its test-set size.
    """
    if len(correct_per_task) != len(total_per_task):
        raise ValueError(
            f"got {len(correct_per_task)} correct counts but {len(total_per_task)} totals"
        )
    return accuracy(sum(correct_per_task), sum(total_per_task))


def task_identity_accuracy(
    right_per_task: Sequence[int], inferred_per_task: Sequence[int]
) -> float:
    """Task-identification accuracy in percent over the samples whose task was inferred:
    ``100 * sum(right) / sum(inferred)`` (per task: samples named rightly, samples named)."""
    if len(right_per_task) != len(inferred_per_task):
        raise ValueError(
            f"got {len(right_per_task)} right counts but {len(inferred_per_task)} inferred counts"
        )
    return accuracy(sum(right_per_task), sum(inferred_per_task))


def harmonic_mean(base: float, novel: float) -> float:
    """Harmonic mean of base and novel accuracy: ``2 * b * n / (b + n)`` (0 when both are 0)."""
    if base + novel == 0:
        return 0.0
    return 2.0 * base * novel / (base + novel)


def summarize(acc: AccuracyMatrix) -> dict[str, float | list[float] | None]:
    """All matrix metrics: keys ``faa``, ``caa``, ``fm``, ``bwt`` and ``avg_acc`` (per task)."""
    return {
        "faa": final_average_accuracy(acc),
        "caa": cumulative_average_accuracy(acc),
        "fm": forgetting(acc),
        "bwt": backward_transfer(acc),
        "avg_acc": average_accuracies(acc),
    }
