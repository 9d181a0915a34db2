from .continual import (
    AccuracyMatrix,
    accuracy,
    average_accuracies,
    backward_transfer,
    cumulative_average_accuracy,
    final_average_accuracy,
    forgetting,
    harmonic_mean,
    lower_triangle,
    summarize,
    task_identity_accuracy,
    union_accuracy,
)

__all__ = [
    "AccuracyMatrix",
    "accuracy",
    "average_accuracies",
    "backward_transfer",
    "cumulative_average_accuracy",
    "final_average_accuracy",
    "forgetting",
    "harmonic_mean",
    "lower_triangle",
    "summarize",
    "task_identity_accuracy",
    "union_accuracy",
]
