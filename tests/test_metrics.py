import pytest

from promptcl.metrics import (
    accuracy,
    average_accuracies,
    average_accuracy,
    backward_transfer,
    cumulative_average_accuracy,
    final_average_accuracy,
    forgetting,
    harmonic_mean,
    summarize,
    task_identity_accuracy,
    union_accuracy,
)

# Three tasks, monotone forgetting: the per-task max sits on the diagonal.
ACC_3 = [[90], [80, 95], [70, 85, 92]]

# Four tasks; task 0 improves (60 -> 70 -> 75) before dropping to 65, so its FM peak is off the
# diagonal and its BWT is positive while its forgetting is not.
ACC_4 = [
    [60],
    [70, 80],
    [75, 78, 90],
    [65, 70, 85, 88],
]


def test_three_tasks_by_hand():
    # avg = [90, (80+95)/2, (70+85+92)/3] = [90, 87.5, 247/3]
    assert average_accuracies(ACC_3) == pytest.approx([90.0, 87.5, 247 / 3])
    assert final_average_accuracy(ACC_3) == pytest.approx(247 / 3)
    assert cumulative_average_accuracy(ACC_3) == pytest.approx((90 + 87.5 + 247 / 3) / 3)
    # FM: task 0 max(90, 80) - 70 = 20, task 1 95 - 85 = 10
    assert forgetting(ACC_3) == pytest.approx(15.0)
    # BWT: (70 - 90 + 85 - 95) / 2
    assert backward_transfer(ACC_3) == pytest.approx(-15.0)


def test_four_tasks_max_off_diagonal():
    # avg = [60, 150/2, 243/3, 308/4] = [60, 75, 81, 77]
    assert average_accuracies(ACC_4) == pytest.approx([60.0, 75.0, 81.0, 77.0])
    assert final_average_accuracy(ACC_4) == pytest.approx(77.0)
    assert cumulative_average_accuracy(ACC_4) == pytest.approx(293 / 4)
    # FM: task 0 max(60, 70, 75) - 65 = 10, task 1 max(80, 78) - 70 = 10, task 2 90 - 85 = 5
    assert forgetting(ACC_4) == pytest.approx(25 / 3)
    # BWT: (65 - 60) + (70 - 80) + (85 - 90) = -10 over 3 tasks
    assert backward_transfer(ACC_4) == pytest.approx(-10 / 3)


def test_single_task():
    acc = [[73.5]]
    assert average_accuracies(acc) == [73.5]
    assert final_average_accuracy(acc) == 73.5
    assert cumulative_average_accuracy(acc) == 73.5
    assert forgetting(acc) is None
    assert backward_transfer(acc) is None


def test_full_rows_match_ragged_rows():
    full = [row + [None] * (len(ACC_4) - len(row)) for row in ACC_4]
    assert full[0] == [60, None, None, None]
    assert summarize(full) == summarize(ACC_4)


def test_summarize():
    s = summarize(ACC_3)
    assert set(s) == {"faa", "caa", "fm", "bwt", "avg_acc"}
    assert s["faa"] == pytest.approx(247 / 3)
    assert s["caa"] == pytest.approx((90 + 87.5 + 247 / 3) / 3)
    assert s["fm"] == pytest.approx(15.0)
    assert s["bwt"] == pytest.approx(-15.0)
    assert s["avg_acc"] == pytest.approx([90.0, 87.5, 247 / 3])
    assert summarize([[50.0]])["fm"] is None


@pytest.mark.parametrize(
    "acc, match",
    [
        ([], "empty"),
        ([[90], [80]], "row 1"),
        ([[90], [80, None]], r"\[1\]\[1\]"),
        ([[None, None], [80, 95]], r"\[0\]\[0\]"),
    ],
)
def test_bad_matrix_raises(acc, match):
    with pytest.raises(ValueError, match=match):
        summarize(acc)


def test_accuracy():
    assert accuracy(45, 60) == pytest.approx(75.0)
    with pytest.raises(ValueError):
        accuracy(1, 0)
    with pytest.raises(ValueError):
        accuracy(7, 5)


def test_union_accuracy_differs_from_mean_for_unequal_tasks():
    correct, total = [90, 200], [100, 400]
    # per task: 90% and 50%, mean 70%; union: 290 / 500 = 58%
    per_task = [accuracy(c, n) for c, n in zip(correct, total, strict=True)]
    assert sum(per_task) / len(per_task) == pytest.approx(70.0)
    assert union_accuracy(correct, total) == pytest.approx(58.0)
    # equal sizes: union equals the mean
    assert union_accuracy([90, 50], [100, 100]) == pytest.approx(70.0)
    with pytest.raises(ValueError):
        union_accuracy([1, 2], [3])


def test_task_identity_accuracy():
    # task 0: 3 of 4 samples named rightly, task 1: 1 of 4
    assert task_identity_accuracy([3, 1], [4, 4]) == pytest.approx(50.0)
    with pytest.raises(ValueError):
        task_identity_accuracy([0, 1], [0])


def test_harmonic_mean():
    # 2 * 80 * 60 / (80 + 60) = 9600 / 140
    assert harmonic_mean(80.0, 60.0) == pytest.approx(480 / 7)
    assert harmonic_mean(70.0, 70.0) == pytest.approx(70.0)
    assert harmonic_mean(80.0, 0.0) == 0.0
    assert harmonic_mean(0.0, 0.0) == 0.0


def test_average_accuracy_of_one_row_is_its_mean_and_refuses_an_empty_one():
    assert average_accuracy([90.0, 80.0, 40.0]) == 70.0
    assert average_accuracy([73.5]) == 73.5
    with pytest.raises(ValueError):
        average_accuracy([])
