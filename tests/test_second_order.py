"""LDA, RanPAC and the task-identity classifiers on frozen features: hand-worked cases."""

import pytest
import torch

from promptcl.backbones.hf import tiny_bert
from promptcl.config import build_dataclass
from promptcl.errors import UsageError
from promptcl.taskid.discriminant import ClassSums, DiscriminantClassifier
from promptcl.taskid.ridge import RandomFeatureRidge, ridge_predictions
from promptcl.taskid.tii import TaskInference, TIIOptions
from promptcl.tuners import Batch, TaskData, get_tuner


@pytest.fixture(scope="module")
def backbone():
    return tiny_bert()


def make(name, backbone, num_classes=4, **options):
    cls = get_tuner(name)
    torch.manual_seed(0)
    return cls(build_dataclass(cls.config_class, options, name), backbone, num_classes)


def query_batch(q, labels):
    return Batch({}, torch.tensor(labels), torch.arange(len(labels)), q)


def test_lda_scores_equal_a_hand_computation():
    # d = 2; class 0 at (0, 0) +- (1, 0), class 1 at (2, 2) +- (0, 1)
    x = torch.tensor([[-1.0, 0], [1, 0], [2, 1], [2, 3]])
    classifier = DiscriminantClassifier(2, 2, "lda", shrinkages=[0.5])
    classifier.fit_task(x, torch.tensor([0, 0, 1, 1]), [0, 1])
    # pooled within-class scatter diag(2, 2) over N - C = 2: Sigma = I; shrunk to 0.5 I + 0.5 I
    mu = torch.tensor([[0.0, 0], [2, 2]])
    test = torch.tensor([[1.0, 1.5]])
    want = test @ mu.T - 0.5 * (mu * mu).sum(dim=1)  # Sigma^{-1} = I
    torch.testing.assert_close(classifier(test), want)
    assert classifier.shrinkage.tolist() == [0.5]


def test_lda_shrinkage_on_an_anisotropic_case():
    # Sigma = diag(4, 1) (scatter diag(8, 2) over 2); gamma = 0.5: 0.5 Sigma + 0.5 * 2.5 I
    x = torch.tensor([[-2.0, 0], [2, 0], [0, 1], [0, 3]])
    classifier = DiscriminantClassifier(2, 2, "lda", shrinkages=[0.5])
    classifier.fit_task(x, torch.tensor([0, 0, 1, 1]), [0, 1])
    inv = torch.diag(torch.tensor([1 / 3.25, 1 / 1.75]))
    mu = torch.tensor([[0.0, 0], [0, 2]])
    test = torch.tensor([[0.5, -1.0], [1.0, 1.0]])
    want = test @ inv @ mu.T - 0.5 * ((mu @ inv) * mu).sum(dim=1)
    torch.testing.assert_close(classifier(test).float(), want)


def test_class_sums_accumulated_task_by_task_equal_all_at_once():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(30, 5, generator=g), torch.randint(0, 4, (30,), generator=g)
    parts, whole = ClassSums(4, 5), ClassSums(4, 5)
    parts.accumulate(x[:11], y[:11])
    parts.accumulate(x[11:], y[11:])
    whole.accumulate(x, y)
    for key, value in whole.state_dict().items():
        torch.testing.assert_close(parts.state_dict()[key], value)
    classes = torch.arange(4)
    xd = x.double()
    mu = torch.stack([xd[y == c].mean(0) for c in range(4)])
    centred = xd - mu[y]
    torch.testing.assert_close(whole.within_covariance(classes), centred.T @ centred / (30 - 4))


def test_ranpac_incremental_statistics_equal_those_of_all_data_at_once(backbone):
    tuner = make("ranpac", backbone, dim=64)
    g = torch.Generator().manual_seed(1)
    q = torch.randn(40, backbone.dim, generator=g)
    labels = [0, 1] * 10 + [2, 3] * 10
    tuner.begin_task(0, [0, 1])
    tuner.end_task(
        0, [0, 1], TaskData([query_batch(q[:7], labels[:7]), query_batch(q[7:20], labels[7:20])])
    )
    tuner.begin_task(1, [2, 3])
    tuner.end_task(1, [2, 3], TaskData([query_batch(q[20:], labels[20:])]))
    ridge_head = tuner.classifier
    h = torch.relu(q @ ridge_head.projection).double()  # the sums of all samples at once
    y = torch.nn.functional.one_hot(torch.tensor(labels), 4).double()
    # the projection is an fp32 matmul whose rounding depends on the batch it runs in (blocked
    # GEMM): the float64 sums agree to fp32 precision, not to float64's
    torch.testing.assert_close(ridge_head.gram, h.T @ h, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(ridge_head.target_sum, h.T @ y, rtol=1e-5, atol=1e-4)
    ridge = ridge_head.ridge[-1].item()
    want = torch.linalg.solve(h.T @ h + ridge * torch.eye(64, dtype=h.dtype), h.T @ y)
    torch.testing.assert_close(ridge_head.weight, want.float(), rtol=1e-4, atol=1e-5)
    logits = tuner.eval()(query_batch(q[:3], labels[:3])).logits
    torch.testing.assert_close(logits, (h[:3] @ want).float(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("n", [5, 50])  # fewer and more samples than features
def test_ridge_predictions_equal_the_direct_solution(n):
    g = torch.Generator().manual_seed(2)
    h, y, test = (torch.randn(s, generator=g).double() for s in [(n, 12), (n, 3), (4, 12)])
    ridges = [1e-2, 1.0, 1e3]
    for r, got in zip(ridges, ridge_predictions(h, y, test, ridges), strict=True):
        w = torch.linalg.solve(h.T @ h + r * torch.eye(12).double(), h.T @ y)
        torch.testing.assert_close(got, test @ w)


def clustered(task, per_class=20, seed=0):
    """Two well-separated classes per task in d = 8: class c sits at 4 * e_c."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.tensor([2 * task, 2 * task + 1]).repeat_interleave(per_class)
    centres = 4 * torch.eye(8)[labels]
    return centres + 0.3 * torch.randn(len(labels), 8, generator=g), labels


@pytest.mark.parametrize("classifier", ["mlp", "lda", "ncm", "ranpac"])
def test_each_tii_classifier_names_the_right_task(classifier):
    torch.manual_seed(0)
    options = TIIOptions(
        classifier=classifier, epochs=30, align_epochs=30, lr=0.01, projection_dim=64
    )
    tii = TaskInference(8, 6, options)
    for task in range(3):
        tii.begin_task(task, [2 * task, 2 * task + 1])
        tii.fit(task, [2 * task, 2 * task + 1], *clustered(task))
    test = [clustered(task, seed=9) for task in range(3)]
    queries = torch.cat([x for x, _ in test])
    truth = torch.cat([labels // 2 for _, labels in test])
    assert torch.equal(tii.infer_task(queries), truth)


@pytest.mark.parametrize("classifier", ["lda", "ranpac"])
def test_edit_methods_name_the_task_by_tii(backbone, classifier):
    tii = {"classifier": classifier, "projection_dim": 64}
    tuner = make("softtf", backbone, num_classes=6, task_id="tii", tii=tii).eval()
    g = torch.Generator().manual_seed(3)
    centres = 5 * torch.randn(6, backbone.dim, generator=g)
    for task, classes in enumerate([[0, 1, 2], [3, 4, 5]]):
        tuner.begin_task(task, classes)
        labels = torch.tensor(classes * 4)
        q = centres[labels] + 0.1 * torch.randn(len(labels), backbone.dim, generator=g)
        tuner.end_task(task, classes, TaskData([query_batch(q, labels.tolist())]))
    ids = torch.randint(1000, 2000, (4, 6), generator=g)
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    labels = torch.tensor([1, 4, 5, 0])
    batch = Batch(inputs, labels, torch.arange(4), centres[labels])
    with torch.no_grad():
        out = tuner(batch)
        given = tuner(batch, task=torch.tensor([0, 1, 1, 0]))
    assert out.task_pred.tolist() == [0, 1, 1, 0]
    torch.testing.assert_close(out.logits, given.logits)


@pytest.mark.parametrize("classifier", ["mlp", "lda", "ncm", "ranpac"])
@pytest.mark.parametrize("name", ["hash", "hide", "norga"])
def test_hide_family_infers_the_task_with_the_chosen_tii_classifier(name, classifier, backbone):
    tii = {"classifier": classifier, "epochs": 30, "align_epochs": 30, "lr": 0.01}
    tii["projection_dim"] = 64
    tuner = make(name, backbone, num_classes=6, tii=tii, tap=None).eval()
    g = torch.Generator().manual_seed(4)
    centres = 5 * torch.randn(6, backbone.dim, generator=g)
    ids = torch.randint(1000, 2000, (12, 6), generator=g)
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    for task, classes in enumerate([[0, 1, 2], [3, 4, 5]]):
        tuner.begin_task(task, classes)
        labels = torch.tensor(classes * 4)
        q = centres[labels] + 0.1 * torch.randn(len(labels), backbone.dim, generator=g)
        tuner.end_task(task, classes, TaskData([Batch(inputs, labels, torch.arange(12), q)]))
    labels = torch.tensor([1, 4, 5, 0])
    batch = Batch({k: v[:4] for k, v in inputs.items()}, labels, torch.arange(4), centres[labels])
    with torch.no_grad():
        assert tuner(batch).task_pred.tolist() == [0, 1, 1, 0]


def test_ranpac_tii_sums_equal_those_of_all_data_at_once():
    tii = TaskInference(8, 6, TIIOptions(classifier="ranpac", projection_dim=32))
    parts = [clustered(task, per_class=7, seed=task) for task in range(3)]
    for task, (x, labels) in enumerate(parts):
        tii.begin_task(task, [2 * task, 2 * task + 1])
        tii.fit(task, [2 * task, 2 * task + 1], x, labels)
    whole = RandomFeatureRidge(8, 6, 32)
    whole.projection.copy_(tii.classifier.projection)
    x, labels = (torch.cat(items) for items in zip(*parts, strict=True))
    whole.fit_task(x, labels, seed=0)
    torch.testing.assert_close(tii.classifier.gram, whole.gram, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(tii.classifier.target_sum, whole.target_sum, rtol=1e-5, atol=1e-4)
    assert len(tii.classifier.ridge) == 3  # lambda chosen after every task


def test_a_ranpac_tii_leaves_the_global_random_stream_alone():
    torch.manual_seed(5)
    TaskInference(8, 6, TIIOptions(classifier="lda"))
    after_lda = torch.rand(3)
    torch.manual_seed(5)
    TaskInference(8, 6, TIIOptions(classifier="ranpac", projection_dim=16))
    assert torch.equal(torch.rand(3), after_lda)  # prompts start alike under either classifier


def hide_stages(head):
    from promptcl.tuners.stages import HiDeStages

    return HiDeStages(8, 6, TIIOptions(projection_dim=64), tap=None, head=head)


@pytest.mark.parametrize("head", ["lda", "ranpac"])
def test_second_order_head_names_the_right_class(head):
    torch.manual_seed(0)
    stages, linear = hide_stages(head), torch.nn.Linear(8, 6)
    for task in range(3):
        classes = [2 * task, 2 * task + 1]
        stages.begin_task(task, classes)
        features, labels = clustered(task)
        data = TaskData([query_batch(torch.randn(len(labels), 8), labels.tolist())])
        stages.end_task(task, classes, data, features, linear)
    test = [clustered(task, seed=9) for task in range(3)]
    features = torch.cat([x for x, _ in test])
    truth = torch.cat([labels for _, labels in test])
    assert torch.equal(stages.eval().logits(features, linear).argmax(dim=1), truth)
    torch.testing.assert_close(stages.train().logits(features, linear), linear(features))


def old_class_sums(stages, classes):
    head = stages.second_head
    if head.__class__.__name__ == "RidgeTaskClassifier":
        return [head.target_sum[:, classes].clone()]
    return [head.sums.feature_sum[classes].clone(), head.sums.count[classes].clone()]


@pytest.mark.parametrize("head", ["lda", "ranpac"])
@pytest.mark.parametrize("name", ["hide", "hash"])
def test_head_sums_of_old_classes_never_change_after_their_task(name, head, backbone):
    tuner = make(name, backbone, num_classes=6, tap=None, head=head, tii={"projection_dim": 32})
    g = torch.Generator().manual_seed(6)
    ids = torch.randint(1000, 2000, (12, 6), generator=g)
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    kept = []
    for task, classes in enumerate([[0, 1], [2, 3], [4, 5]]):
        tuner.begin_task(task, classes)
        labels = torch.tensor(classes * 6)
        q = torch.randn(12, backbone.dim, generator=g)
        with torch.no_grad():  # the task's prompts move, as training would move them
            for p in tuner.parameters():
                if p.requires_grad:
                    p.add_(torch.randn_like(p))
        tuner.eval().end_task(task, classes, TaskData([Batch(inputs, labels, torch.arange(12), q)]))
        kept.append((classes, old_class_sums(tuner.stages, classes)))
        for old, sums in kept:
            for now, then in zip(old_class_sums(tuner.stages, old), sums, strict=True):
                assert torch.equal(now, then)
    if name == "hide" and head == "lda":  # hide's task-0 prompt is frozen after task 0: its
        # classes' sums are those of task 0's samples under task 0's prompt, recomputed now
        labels = torch.tensor([0, 1] * 6)
        with torch.no_grad():
            out = tuner(Batch(inputs, labels, torch.arange(12), q), task=torch.zeros(12).long())
        x = out.extras["features"].double()
        want = torch.stack([x[labels == c].sum(dim=0) for c in (0, 1)])
        got = tuner.stages.second_head.sums.feature_sum[:2]
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_a_ranpac_checkpoint_with_the_old_tensor_names_loads(backbone):
    from promptcl.config.migrate import moved_tensors

    tuner = make("ranpac", backbone, dim=16)
    g = torch.Generator().manual_seed(7)
    q, labels = torch.randn(20, backbone.dim, generator=g), [0, 1] * 10
    tuner.begin_task(0, [0, 1])
    tuner.end_task(0, [0, 1], TaskData([query_batch(q, labels)]))
    old = {k.removeprefix("classifier."): v for k, v in tuner.trained_state().items()}
    fresh = make("ranpac", backbone, dim=16)
    fresh.load_trained_state(moved_tensors(old, fresh.trained_state()))
    for key, value in tuner.trained_state().items():
        assert torch.equal(fresh.trained_state()[key], value), key


# -- first-session adaptation of the TII's query (tuner.tii.adapt) ---------------------------


def token_batch(classes, per=12, seed=0):
    """Samples whose tokens come from a narrow range of each class's own: ``per`` per class,
    no frozen query (a tuner with tii.adapt does not ask for one)."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.tensor(classes).repeat_interleave(per)
    ids = 1000 + 40 * labels[:, None] + torch.randint(0, 3, (len(labels), 6), generator=g)
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    return Batch(inputs, labels, torch.arange(len(labels)), None)


def adapted_tensors(tuner):
    return {n: p.detach().clone() for n, p in tuner.stages.adapted.named_parameters()}


@pytest.mark.parametrize("name", ["hash", "hide", "norga"])
def test_an_adapted_tii_query_trains_on_the_first_task_only(name, backbone):
    tuner = make(name, backbone, num_classes=6, tap=None, tii={"adapt": True})
    assert not tuner.needs_query  # the frozen query pass is not run for it
    adapted = set(tuner.stages.adapted.parameters())
    for task, classes in enumerate([[0, 1, 2], [3, 4, 5]]):
        tuner.begin_task(task, classes)
        grouped = {p for group in tuner.param_groups() for p in group["params"]}
        optimizer = torch.optim.SGD([p for p in tuner.parameters() if p.requires_grad], lr=1.0)
        before = adapted_tensors(tuner)
        batch = token_batch(classes, per=2)
        out = tuner.train()(batch, task=torch.full_like(batch.labels, task))
        terms = tuner.loss_terms(batch, out, task)
        assert ("tii_adapt" in terms) == (task == 0)
        optimizer.zero_grad()
        sum(terms.values(), torch.nn.functional.cross_entropy(out.logits, batch.labels)).backward()
        optimizer.step()
        assert all(p.grad is None for p in backbone.parameters())
        moved = {n for n, p in tuner.stages.adapted.named_parameters() if p.ne(before[n]).any()}
        if task == 0:  # the prefix and its head train beside the task's prompts
            assert adapted <= grouped and moved == set(before)
        else:  # then they are frozen: out of the optimiser, unmoved
            assert not adapted & grouped and not moved
        tuner.eval().end_task(task, classes, TaskData([token_batch(classes, seed=task)]))


@pytest.mark.parametrize("name", ["hash", "hide"])
def test_an_adapted_tii_query_names_the_task_from_the_adapted_feature(name, backbone):
    tuner = make(name, backbone, num_classes=6, tap=None, tii={"adapt": True}).eval()
    seen = []
    for task, classes in enumerate([[0, 1, 2], [3, 4, 5]]):
        tuner.begin_task(task, classes)
        seen.append(token_batch(classes, seed=task))
        tuner.end_task(task, classes, TaskData([seen[-1]]))
    with torch.no_grad():  # the lda TII's class sums are those of the adapted features
        x = torch.cat([tuner.stages.query(b, backbone) for b in seen]).double()
        frozen = torch.cat([backbone.features(b.inputs) for b in seen]).double()
    labels = torch.cat([b.labels for b in seen])
    want = torch.stack([x[labels == c].sum(dim=0) for c in range(6)])
    got = tuner.stages.classifier.sums.feature_sum
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(x, frozen, atol=1e-3)  # the prefix changes the query
    test = token_batch(list(range(6)), per=3, seed=7)
    with torch.no_grad():
        assert torch.equal(tuner(test).task_pred, test.labels // 3)


@pytest.mark.parametrize("name", ["hash", "hide"])
def test_prompts_start_alike_with_or_without_an_adapted_tii_query(name, backbone):
    states = []
    for adapt in (False, True):
        tuner = make(name, backbone, num_classes=6, tii={"adapt": adapt})
        tuner.begin_task(0, [0, 1, 2])  # hash's router is drawn here
        states.append(tuner.trained_state())
    assert set(states[1]) - set(states[0]) == {
        "stages.adapted.prompt", "stages.adapted.head.weight", "stages.adapted.head.bias"
    }  # fmt: skip
    assert all(torch.equal(value, states[1][key]) for key, value in states[0].items())


def test_an_adapted_tii_query_is_refused_by_the_edit_methods(backbone):
    with pytest.raises(UsageError, match="tii.adapt is an option of hide, norga and hash"):
        make("softtf", backbone, task_id="tii", tii={"adapt": True})
