"""HiDe-Prompt's per-class Gaussians, task-identity inference (TII) and task-adaptive
prediction (TAP) on toy problems whose answers are known."""

from dataclasses import asdict

import pytest
import torch
import torch.nn.functional as F

from promptcl.taskid.gaussians import ClassGaussians
from promptcl.taskid.tii import TaskIdentityClassifier, TIIOptions
from promptcl.tuners.align import TAPOptions, align_head

TASKS = [[0, 1], [2, 3], [4, 5]]
CLASS_TASK = torch.tensor([0, 0, 1, 1, 2, 2])
MEANS = 5.0 * torch.eye(8)[:6]  # 6 classes, pairwise distance 7 at unit variance


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny matrices: extra threads only add overhead (and stall on a busy machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def draw(per_class: int) -> tuple[torch.Tensor, torch.Tensor]:
    labels = torch.arange(6).repeat_interleave(per_class)
    return MEANS[labels] + torch.randn(len(labels), 8), labels


# -- ClassGaussians ----------------------------------------------------------------------------


def test_fit_by_hand():
    g = ClassGaussians(4, 2)
    g.fit(torch.tensor([[0.0, 0.0], [2.0, 2.0], [1.0, 3.0]]), torch.tensor([1, 1, 3]))
    assert torch.equal(g.mean[1], torch.tensor([1.0, 1.0]))
    assert torch.equal(g.var[1], torch.tensor([2.0, 2.0]))  # unbiased: (1 + 1) / (2 - 1)
    assert torch.equal(g.mean[3], torch.tensor([1.0, 3.0]))
    assert torch.equal(g.var[3], torch.zeros(2))  # one sample: only eps when sampling
    assert g.count.tolist() == [0, 2, 0, 1]
    assert g.fitted.tolist() == [False, True, False, True]
    full = ClassGaussians(4, 2, covariance="full")
    full.fit(torch.tensor([[0.0, 0.0], [2.0, 2.0]]), torch.tensor([1, 1]))
    assert torch.equal(full.cov[1], torch.tensor([[2.0, 2.0], [2.0, 2.0]]))
    assert "var" not in dict(full.named_buffers())


def test_fit_recovers_known_statistics():
    torch.manual_seed(0)
    mean, std = torch.tensor([1.0, -2.0, 0.5]), torch.tensor([0.5, 2.0, 1.0])
    x = mean + std * torch.randn(20_000, 3)
    g = ClassGaussians(2, 3)
    g.fit(x, torch.ones(20_000, dtype=torch.long))
    assert torch.allclose(g.mean[1], mean, atol=0.05)
    assert torch.allclose(g.var[1], std**2, rtol=0.05)


def test_sample_shapes_labels_and_statistics():
    torch.manual_seed(0)
    g = ClassGaussians(5, 3)
    x = torch.tensor([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0], [2.0, 0.0, 2.0]])
    g.fit(torch.cat([x, -x]), torch.tensor([2, 2, 2, 4, 4, 4]))
    features, labels = g.sample([4, 2], 10_000)
    assert features.shape == (20_000, 3) and labels.dtype == torch.long
    assert torch.equal(labels, torch.tensor([4, 2]).repeat_interleave(10_000))
    for c in (2, 4):
        drawn = features[labels == c]
        assert torch.allclose(drawn.mean(0), g.mean[c], atol=0.05)
        assert torch.allclose(drawn.var(0), g.var[c] + g.eps, rtol=0.05)


def test_sampling_is_seeded_by_the_global_rng():
    g = ClassGaussians(3, 4)
    g.fit(torch.randn(10, 4), torch.tensor([0] * 5 + [1] * 5))
    torch.manual_seed(7)
    first = g.sample([0, 1], 3)[0]
    torch.manual_seed(7)
    assert torch.equal(first, g.sample([0, 1], 3)[0])


def test_full_covariance_sampling():
    torch.manual_seed(0)
    cov = torch.tensor([[2.0, 1.2, 0.0], [1.2, 1.0, 0.3], [0.0, 0.3, 0.5]])
    x = torch.randn(20_000, 3) @ torch.linalg.cholesky(cov).T + torch.tensor([1.0, 0.0, -1.0])
    g = ClassGaussians(2, 3, covariance="full")
    g.fit(x, torch.zeros(20_000, dtype=torch.long))
    assert torch.allclose(g.cov[0], cov, atol=0.06)
    features, labels = g.sample([0], 20_000)
    assert features.shape == (20_000, 3) and bool((labels == 0).all())
    assert torch.allclose(features.mean(0), g.mean[0], atol=0.05)
    assert torch.allclose(torch.cov(features.T), g.cov[0] + g.eps * torch.eye(3), atol=0.06)


def test_full_covariance_singular_and_broken():
    g = ClassGaussians(2, 16, covariance="full")
    g.fit(torch.randn(3, 16), torch.zeros(3, dtype=torch.long))  # rank 2 of 16
    assert bool(g.sample([0], 50)[0].isfinite().all())
    g.cov[1] = torch.diag_embed(torch.ones(16))
    g.cov[1, 0, 1] = g.cov[1, 1, 0] = 2.0  # not positive semi-definite: diagonal fallback
    g.count[1] = 1
    factor = g.factors([1])[0]
    assert torch.allclose(factor, torch.eye(16) * (1 + g.eps) ** 0.5)


def test_unfitted_class_rejected():
    g = ClassGaussians(3, 2)
    g.fit(torch.zeros(2, 2), torch.tensor([0, 0]))
    with pytest.raises(ValueError, match=r"\[2\]"):
        g.sample([0, 2], 4)
    with pytest.raises(ValueError):
        ClassGaussians(3, 2, covariance="low-rank")


# -- TII ---------------------------------------------------------------------------------------


def fit_tii(align_epochs: int) -> tuple[TaskIdentityClassifier, list[int]]:
    """Task by task: only the current task's real features plus the old classes' Gaussians."""
    features, labels = draw(100)
    gaussians = ClassGaussians(6, 8)
    tii = TaskIdentityClassifier(8, 6)
    seen: list[int] = []
    for classes in TASKS:
        mask = torch.isin(labels, torch.tensor(classes))
        seen += classes
        gaussians.fit(features[mask], labels[mask])
        with torch.no_grad():  # as inside Tuner.end_task
            tii.fit_task(
                features[mask],
                labels[mask],
                classes,
                seen,
                gaussians,
                epochs=5,
                align_epochs=align_epochs,
                lr=1e-3,
                align_lr=1e-2,
                batch_size=32,
                samples_per_class=64,
            )
    return tii, seen


def test_tii_infers_tasks_without_forgetting():
    torch.manual_seed(0)
    tii, seen = fit_tii(align_epochs=10)
    queries, labels = draw(200)
    pred = tii.predict_task(queries, seen, CLASS_TASK)
    true = CLASS_TASK[labels]
    assert pred.shape == (1200,) and pred.dtype == torch.long
    assert (pred == true).float().mean() > 0.95
    assert (pred[true == 0] == 0).float().mean() > 0.95  # the first task is not forgotten

    torch.manual_seed(0)
    unaligned, _ = fit_tii(align_epochs=0)  # below 0.8 for every seed tried
    assert (unaligned.predict_task(queries, seen, CLASS_TASK) == true).float().mean() < 0.9


def test_tii_is_deterministic_and_checks_classes():
    torch.manual_seed(3)
    first = fit_tii(align_epochs=1)[0].state_dict()
    torch.manual_seed(3)
    second = fit_tii(align_epochs=1)[0].state_dict()
    assert all(torch.equal(first[k], second[k]) for k in first)
    tii, g = TaskIdentityClassifier(8, 6), ClassGaussians(6, 8)
    with pytest.raises(ValueError, match="subset"):
        tii.fit_task(
            torch.zeros(2, 8),
            torch.tensor([2, 3]),
            [2, 3],
            [0, 1],
            g,
            **TIIOptions(epochs=1).fit_kwargs(),
        )


def test_predict_task_only_among_seen_classes():
    tii = TaskIdentityClassifier(8, 6)
    with torch.no_grad():
        tii.head.weight.zero_()
        tii.head.bias.copy_(torch.tensor([0.0, 1.0, 0.0, 0.0, 0.0, 9.0]))  # class 5 unseen
    pred = tii.predict_task(torch.randn(4, 8), [0, 1, 2, 3], CLASS_TASK)
    assert pred.tolist() == [0, 0, 0, 0]
    assert tii(torch.randn(4, 8)).shape == (4, 6)


def test_options_defaults_and_validation():
    opts = TIIOptions()
    assert (opts.epochs, opts.align_epochs, opts.batch_size) == (20, 30, 24)
    assert "covariance" not in opts.fit_kwargs()
    assert asdict(TAPOptions()) == {
        "epochs": 30,
        "lr": 0.005,
        "batch_size": 120,
        "samples_per_class": 120,
        "weight_decay": 0.0,
    }
    with pytest.raises(ValueError):
        TIIOptions(batch_size=0)
    with pytest.raises(ValueError):
        TAPOptions(lr=0.0)


# -- TAP ---------------------------------------------------------------------------------------


def test_align_head_removes_recency_bias():
    torch.manual_seed(0)
    features, labels = draw(100)
    head = torch.nn.Linear(8, 6)
    optimizer = torch.optim.Adam(head.parameters(), lr=1e-2)
    last = labels >= 4  # trained on the last task only: every sample goes to class 4 or 5
    for _ in range(200):
        loss = F.cross_entropy(head(features[last]), labels[last])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    test, test_labels = draw(200)
    assert (head(test).argmax(1) == test_labels).float().mean() < 0.5
    gaussians = ClassGaussians(6, 8)
    gaussians.fit(features, labels)
    with torch.no_grad():  # as inside Tuner.end_task
        align_head(head, gaussians, range(6), **asdict(TAPOptions()))
    assert (head(test).argmax(1) == test_labels).float().mean() > 0.95


def test_align_head_ignores_unseen_classes():
    torch.manual_seed(0)
    features, labels = draw(50)
    gaussians = ClassGaussians(6, 8)
    gaussians.fit(features, labels)
    head = torch.nn.Linear(8, 6)
    unseen_before = head.weight[4:].detach().clone()
    align_head(
        head, gaussians, [0, 1, 2, 3], epochs=2, lr=0.01, batch_size=32, samples_per_class=16
    )
    assert torch.equal(head.weight[4:], unseen_before)  # no gradient, no weight decay
