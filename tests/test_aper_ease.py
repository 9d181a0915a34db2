"""APER (first-session adaptation, then prototypes) and EASE (a subspace per task, prototype
complement, reweighted cosine): their defining invariants on hand-worked cases, and the
AdaptFormer adapter beside the MLP that both use."""

import pytest
import torch
import torch.nn.functional as F
from test_tuners import make, make_batch

from promptcl.backbones.clip import tiny_clip
from promptcl.backbones.hf import tiny_bert
from promptcl.backbones.masked import BESIDE_MLP
from promptcl.backbones.vit import tiny_vit
from promptcl.tuners import Batch, TaskData
from promptcl.tuners.adaptformer import AdaptFormer, adapter_edits

TASKS3 = [[0, 1], [2, 3], [4, 5]]


@pytest.fixture(scope="module")
def backbone():
    return tiny_bert()


def task_batches(backbone, task, seeds=(0, 1)):
    a, b = TASKS3[task]
    return [make_batch(backbone, labels=[a, b, a, b], seed=10 * task + s) for s in seeds]


def train(tuner, backbone, task, steps=3, lr=0.05):
    """A few Adam steps on the task's batches (the loop's masked cross-entropy)."""
    params = [p for g in tuner.param_groups() for p in g["params"]]
    optimizer = torch.optim.Adam(params, lr=lr) if params else None
    for step in range(steps if params else 0):
        batch = task_batches(backbone, task)[step % 2]
        outside = torch.ones(6, dtype=torch.bool)
        outside[TASKS3[task]] = False
        tuner.train()
        out = tuner(batch, task=torch.full_like(batch.labels, task))
        loss = F.cross_entropy(out.logits.masked_fill(outside, -1e9), batch.labels)
        tuner.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    tuner.eval()


def run_task(tuner, backbone, task):
    tuner.begin_task(task, TASKS3[task])
    train(tuner, backbone, task)
    tuner.end_task(task, TASKS3[task], TaskData(task_batches(backbone, task)))


def module_state(tuner):
    return {n: p.detach().clone() for n, p in tuner.named_parameters()}


# -- the adapter beside the MLP -------------------------------------------------------------


@pytest.mark.parametrize("make_backbone", [tiny_bert, tiny_vit, tiny_clip])
def test_a_new_adapter_leaves_every_backbone_unchanged(make_backbone):
    bb = make_backbone()
    batch = make_batch(bb) if bb.modality == "text" else None
    inputs = batch.inputs if batch else {"pixel_values": torch.randn(2, 3, 32, 32)}
    torch.manual_seed(0)
    adapters = torch.nn.ModuleList(AdaptFormer(bb.dim, 4, 0.1, 0.1) for _ in range(bb.num_blocks))
    blocks = list(range(bb.num_blocks))
    with torch.no_grad():
        plain, _ = bb(inputs)
        adapted, _ = bb(inputs, edits=adapter_edits(blocks, adapters))
    assert torch.equal(plain, adapted)


class Recorder(torch.nn.Module):
    """Returns a constant and keeps what it read."""

    def forward(self, x):
        self.seen = x
        return torch.full_like(x, 0.25)


def test_the_module_beside_the_mlp_reads_its_input_and_adds_to_its_output():
    bb = tiny_vit()
    b, recorder = bb.model.blocks[0], Recorder()
    x = torch.randn(2, 5, bb.dim)
    with torch.no_grad():
        plain = bb.run_block(0, x, None, None)
        beside = bb.run_block(0, x, None, None, {BESIDE_MLP: recorder})
        mlp_input = x + b.ls1(bb.attentions[0](b.norm1(x), None, None))
    torch.testing.assert_close(recorder.seen, mlp_input)  # before norm2, as AdaptFormer
    torch.testing.assert_close(beside, plain + 0.25)


def test_adaptformer_is_scale_times_up_relu_down_and_drops_out_only_in_training():
    torch.manual_seed(0)
    a = AdaptFormer(8, 3, 0.1, 0.5)
    torch.nn.init.normal_(a.up.weight)
    x = torch.randn(4, 8)
    a.eval()
    want = 0.1 * (torch.relu(x @ a.down.weight.T + a.down.bias) @ a.up.weight.T + a.up.bias)
    torch.testing.assert_close(a(x), want)
    a.train()
    assert not torch.allclose(a(x), want)


# -- APER -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options", [{"module": "adapter"}, {"module": "vpt"}, {"module": "vpt", "blocks": [0]},
                {"module": "prefix"}]
)  # fmt: skip
def test_aper_module_trains_on_the_first_task_then_never_moves(backbone, options):
    tuner = make("aper", backbone, **options)
    before = module_state(tuner)
    run_task(tuner, backbone, 0)
    after_first = module_state(tuner)
    assert any(not torch.equal(before[n], after_first[n]) for n in before)  # it trained
    for task in (1, 2):
        tuner.begin_task(task, TASKS3[task])
        assert tuner.param_groups() == [] and not any(p.requires_grad for p in tuner.parameters())
        train(tuner, backbone, task)
        tuner.end_task(task, TASKS3[task], TaskData(task_batches(backbone, task)))
        for name, tensor in module_state(tuner).items():
            assert torch.equal(tensor, after_first[name]), name  # bitwise


def test_aper_prototypes_are_the_class_means_of_frozen_and_adapted_features(backbone):
    tuner = make("aper", backbone)
    run_task(tuner, backbone, 0)
    run_task(tuner, backbone, 1)
    edits = adapter_edits(list(range(backbone.num_blocks)), tuner.adapters)
    for task in (0, 1):
        batches = task_batches(backbone, task)
        with torch.no_grad():
            frozen = torch.cat([b.query for b in batches])
            adapted = torch.cat([backbone.pool(*backbone(b.inputs, edits=edits)) for b in batches])
        labels = torch.cat([b.labels for b in batches])
        for c in TASKS3[task]:
            rows = [i for i in range(len(labels)) if labels[i] == c]
            want = torch.cat([frozen[rows].sum(0), adapted[rows].sum(0)]) / len(rows)
            torch.testing.assert_close(tuner.prototypes[c], want)
    # a test sample goes to the class of the closest prototype (cosine)
    batch = task_batches(backbone, 1)[0]
    with torch.no_grad():
        z = tuner.feature(batch)
        logits = tuner(batch).logits
    torch.testing.assert_close(logits, F.normalize(z) @ F.normalize(tuner.prototypes).T)


def test_a_fresh_aper_adapter_gives_the_frozen_feature_twice(backbone):
    tuner = make("aper", backbone, adapter_dropout=0.0)
    tuner.begin_task(0, TASKS3[0])
    tuner.eval()
    batch = task_batches(backbone, 0)[0]
    tuner.end_task(0, TASKS3[0], TaskData([batch]))
    q = batch.query
    for c in TASKS3[0]:
        mean = q[batch.labels == c].mean(0)
        torch.testing.assert_close(tuner.prototypes[c], torch.cat([mean, mean]))


# -- EASE -----------------------------------------------------------------------------------


def test_ease_old_adapters_never_move_and_the_new_ones_train(backbone):
    tuner = make("ease", backbone)
    run_task(tuner, backbone, 0)
    old = {n: p.detach().clone() for n, p in tuner.adapters[0].named_parameters()}
    tuner.begin_task(1, TASKS3[1])
    new = {n: p.detach().clone() for n, p in tuner.adapters[1].named_parameters()}
    trained = {id(p) for g in tuner.param_groups() for p in g["params"]}
    assert not any(id(p) in trained or p.requires_grad for p in tuner.adapters[0].parameters())
    train(tuner, backbone, 1)
    tuner.end_task(1, TASKS3[1], TaskData(task_batches(backbone, 1)))
    for n, p in tuner.adapters[0].named_parameters():
        assert torch.equal(p, old[n]), n
    assert any(not torch.equal(p, new[n]) for n, p in tuner.adapters[1].named_parameters())


def test_ease_trains_over_the_task_classes_only(backbone):
    tuner = make("ease", backbone)
    tuner.begin_task(0, TASKS3[0])
    tuner.begin_task(1, TASKS3[1])
    tuner.train()
    batch = task_batches(backbone, 1)[0]
    logits = tuner(batch, task=torch.ones_like(batch.labels)).logits
    assert torch.isinf(logits[:, [0, 1, 4, 5]]).all() and logits[:, [2, 3]].isfinite().all()


def authors_complement(A_hat, A, B):
    """models/ease.py's loops: cosine of each old prototype with each newer one, softmax over
    the newer classes, the weighted sum of their prototypes in the new subspace."""
    similarity = torch.zeros(len(A_hat), len(A))
    for i in range(len(A_hat)):
        for j in range(len(A)):
            similarity[i][j] = torch.cosine_similarity(A_hat[i], A[j], dim=0)
    similarity = F.softmax(similarity, dim=1)
    B_hat = torch.zeros(A_hat.shape[0], B.shape[1])
    for i in range(len(A_hat)):
        for j in range(len(A)):
            B_hat[i] += similarity[i][j] * B[j]
    return B_hat


@pytest.mark.parametrize("recalc_sim", [True, False])
def test_ease_real_prototypes_stay_and_old_ones_are_completed(backbone, recalc_sim):
    tuner = make("ease", backbone, recalc_sim=recalc_sim)
    history = []
    for task in range(3):
        run_task(tuner, backbone, task)
        history.append(tuner.prototypes.clone())
    P = history[-1]
    for k, classes in enumerate(TASKS3):
        for c in classes:
            for t in range(k, 3):  # real prototypes (subspaces 0..k) never change
                assert torch.equal(history[t][c, : k + 1], history[k][c, : k + 1])
                assert history[t][c, : t + 1].abs().sum(1).gt(0).all()  # every subspace filled
    # the synthesised ones, by the authors' loops, after the last task
    for k in range(2):
        old = TASKS3[k]
        for j in range(k + 1, 3) if recalc_sim else [2]:
            newer = [c for classes in TASKS3[j:] for c in classes]
            want = authors_complement(P[old, k], P[newer, k], P[newer, j])
            torch.testing.assert_close(P[old, j], want)
    if not recalc_sim:  # only completed: a synthesised prototype, once made, stays
        for k in range(2):
            for j in range(k + 1, 2):
                assert torch.equal(history[2][TASKS3[k], j], history[j][TASKS3[k], j])


def test_ease_reweighted_logits_on_a_hand_made_case(backbone):
    tuner = make("ease", backbone, alpha=0.1)
    for task in range(3):
        tuner.begin_task(task, TASKS3[task])
    tuner.eval()
    torch.manual_seed(1)
    with torch.no_grad():
        tuner.prototypes.copy_(torch.randn_like(tuner.prototypes))
    batch = task_batches(backbone, 0)[0]
    with torch.no_grad():
        logits = tuner(batch).logits
        f = [tuner.subspace(batch.inputs, i) for i in range(3)]
    for c in range(6):
        own = c // 2
        want = sum(
            (1.0 if i == own else 0.1 / 2)
            * F.cosine_similarity(f[i], tuner.prototypes[c, i][None], dim=1)
            for i in range(3)
        )
        torch.testing.assert_close(logits[:, c], want)
    plain = make("ease", backbone, reweight=False)
    for task in range(3):
        plain.begin_task(task, TASKS3[task])
    plain.load_state_dict(tuner.state_dict())
    with torch.no_grad():
        flat = plain.eval()(batch).logits
    torch.testing.assert_close(
        flat, F.normalize(torch.cat(f, 1)) @ F.normalize(tuner.prototypes.flatten(1)).T
    )


def test_ease_resumes_from_its_trained_state(backbone):
    tuner = make("ease", backbone)
    run_task(tuner, backbone, 0)
    run_task(tuner, backbone, 1)
    state = tuner.trained_state()
    fresh = make("ease", backbone)
    for task in range(2):
        fresh.begin_task(task, TASKS3[task])
    fresh.load_trained_state(state)
    batch = task_batches(backbone, 2)[0]
    with torch.no_grad():
        torch.testing.assert_close(fresh.eval()(batch).logits, tuner(batch).logits)


def test_unknown_module_is_refused(backbone):
    from promptcl.errors import UsageError

    with pytest.raises(UsageError, match="module must be one of adapter, vpt, prefix"):
        make("aper", backbone, module="ssf")
    assert isinstance(task_batches(backbone, 0)[0], Batch)
