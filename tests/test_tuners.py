"""Shared checks over every method, with its default options, on a tiny random BERT (STYLE: the
method x model matrix)."""

import pytest
import torch

from promptcl.backbones.hf import tiny_bert
from promptcl.backbones.vit import tiny_vit
from promptcl.config import build_dataclass
from promptcl.errors import UsageError
from promptcl.tuners import TUNERS, Batch, TaskData, get_tuner
from promptcl.tuners.dualprompt import DualPromptConfig

NUM_CLASSES = 6
TASKS = [[0, 1, 2], [3, 4, 5]]
# speed only: RanPAC's 10000-wide projection makes each end of task a 10000 x 10000 solve;
# MOS's head alignment runs 30 epochs
FAST = {"ranpac": {"dim": 256}, "mos": {"align": {"epochs": 1}}}


@pytest.fixture(scope="module")
def backbone():
    return tiny_bert()


def make_batch(backbone, n=4, labels=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000, 2000, (n, 6), generator=g)
    mask = torch.ones_like(ids)
    mask[0, 4:] = 0
    inputs = {"input_ids": ids, "attention_mask": mask}
    labels = torch.tensor(labels if labels is not None else [0, 1, 2, 0][:n])
    return Batch(inputs, labels, torch.arange(n), backbone.features(inputs))


def make(name, backbone, **options):
    cls = get_tuner(name)
    torch.manual_seed(0)
    options = {**FAST.get(name, {}), **options}
    return cls(build_dataclass(cls.config_class, options, name), backbone, NUM_CLASSES)


def train_step(tuner, batch, task):
    tuner.train()
    out = tuner(batch, task=torch.full_like(batch.labels, task))
    outside = torch.ones(NUM_CLASSES, dtype=torch.bool)
    outside[TASKS[task]] = False
    loss = torch.nn.functional.cross_entropy(out.logits.masked_fill(outside, -1e9), batch.labels)
    loss = loss + sum(tuner.loss_terms(batch, out, task).values())
    tuner.zero_grad(set_to_none=True)
    loss.backward()
    return loss


@pytest.mark.parametrize("name", [n for n, cls in TUNERS.items() if cls.trains])
def test_gradients_reach_only_trainable_parameters(name, backbone):
    tuner = make(name, backbone)
    tuner.begin_task(0, TASKS[0])
    tuner.begin_task(1, TASKS[1])
    train_step(tuner, make_batch(backbone, labels=[3, 4, 5, 3]), task=1)
    assert all(p.grad is None for p in backbone.parameters())
    trainable = {n for n, p in tuner.named_parameters() if p.requires_grad}
    assert trainable, "a training method must train something"
    for n, p in tuner.named_parameters():
        if p.grad is not None:
            assert n in trainable, f"{n} is frozen but got a gradient"
    got_grad = {n for n, p in tuner.named_parameters() if p.grad is not None and p.grad.any()}
    assert got_grad, "no trainable parameter received a gradient"


@pytest.mark.parametrize("name", list(TUNERS))
def test_eval_output_of_a_sample_does_not_depend_on_its_batch(name, backbone):
    """Task identity and prompts are chosen per sample: no batch-wise vote."""
    tuner = make(name, backbone).eval()
    for task, classes in enumerate(TASKS):
        tuner.begin_task(task, classes)
        batch = make_batch(backbone, labels=[classes[0], classes[1], classes[2], classes[0]])
        tuner.end_task(task, classes, TaskData([batch]))
    full = make_batch(backbone, n=4)
    single = Batch(
        {k: v[1:2, :] for k, v in full.inputs.items()},
        full.labels[1:2],
        full.index[1:2],
        full.query[1:2],
    )
    with torch.no_grad():
        a, b = tuner(full), tuner(single)
    torch.testing.assert_close(a.logits[1:2], b.logits, atol=1e-5, rtol=1e-5)
    if a.task_pred is not None:
        assert a.task_pred[1] == b.task_pred[0]


@pytest.mark.parametrize("name", list(TUNERS))
def test_defaults_fit_a_two_block_vit(name):
    backbone = tiny_vit()
    tuner = make(name, backbone).eval()
    images = {"pixel_values": torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))}
    batch = Batch(images, torch.tensor([0, 4]), torch.arange(2), backbone.features(images))
    for task, classes in enumerate(TASKS):
        tuner.begin_task(task, classes)
    with torch.no_grad():
        assert tuner(batch).logits.shape == (2, NUM_CLASSES)


@pytest.mark.parametrize(
    ("depth", "g_blocks", "e_blocks"),
    [(12, [0, 1], [2, 3, 4]), (6, [0, 1], [2, 3, 4]), (4, [0], [1, 2, 3]), (2, [0], [1])],
)
def test_dualprompt_default_blocks_follow_the_depth(depth, g_blocks, e_blocks):
    # ViT-B/16 (12) and MiniLM-L6 (6) get the paper's blocks
    assert DualPromptConfig().blocks(depth) == (g_blocks, e_blocks)
    assert DualPromptConfig(g_blocks=[3], e_blocks=[0]).blocks(depth) == ([3], [0])


def test_edit_methods_take_a_base_by_name_with_its_options(backbone):
    tuner = make("softtf", backbone, base="l2p", base_options={"pool_size": 4, "top_k": 2})
    assert tuner.base.name == "l2p" and tuner.base.prompts.shape[0] == 4
    assert tuner.config.base_options["length"] == 5  # every key of the base, for config.json
    with pytest.raises(UsageError, match="base must be one of dualprompt, l2p"):
        make("softtf", backbone, base="ncm")
    with pytest.raises(UsageError, match="base_options.*g_blokcs"):
        make("wsn", backbone, base_options={"g_blokcs": [0]})


def test_dualprompt_old_task_parameters_do_not_move(backbone):
    tuner = make("dualprompt", backbone)
    tuner.begin_task(0, TASKS[0])
    tuner.begin_task(1, TASKS[1])
    before = [tuner.e_prompts[0].clone(), tuner.keys[0].clone(), tuner.head.weight[:3].clone()]
    optimizer = torch.optim.Adam([p for g in tuner.param_groups() for p in g["params"]], lr=0.1)
    for step in range(3):
        train_step(tuner, make_batch(backbone, labels=[3, 4, 5, 3], seed=step), task=1)
        optimizer.step()
    assert not tuner.e_prompts[0].requires_grad and not tuner.keys[0].requires_grad
    torch.testing.assert_close(tuner.e_prompts[0], before[0], atol=0, rtol=0)
    torch.testing.assert_close(tuner.keys[0], before[1], atol=0, rtol=0)
    # masked logits give the old classes' head rows no gradient, so Adam leaves them alone
    torch.testing.assert_close(tuner.head.weight[:3], before[2], atol=0, rtol=0)
    assert not torch.equal(tuner.e_prompts[1], before[0])  # the current task did train


def test_dualprompt_prompt_id_picks_the_closest_key(backbone):
    tuner = make("dualprompt", backbone).eval()
    tuner.begin_task(0, TASKS[0])
    tuner.begin_task(1, TASKS[1])
    batch = make_batch(backbone)
    with torch.no_grad():
        tuner.keys[0].copy_(-batch.query[0])
        tuner.keys[1].copy_(batch.query[0])
        out = tuner(batch)
    assert out.task_pred[0] == 1
    # the same prediction as running with that task's E-prompt given
    with torch.no_grad():
        given = tuner(batch, task=out.task_pred)
    torch.testing.assert_close(out.logits, given.logits)


def test_ncm_class_means_on_a_hand_made_case(backbone):
    tuner = make("ncm", backbone)
    tuner.begin_task(0, TASKS[0])
    d = backbone.dim
    q = torch.zeros(4, d)
    q[0, 0], q[1, 1], q[2, 2], q[3, 0] = 2.0, 1.0, 1.0, 4.0
    batch = Batch({}, torch.tensor([0, 1, 2, 0]), torch.arange(4), q)
    tuner.end_task(0, TASKS[0], TaskData([batch]))
    torch.testing.assert_close(tuner.class_means[0, 0], torch.tensor(3.0))
    test = torch.zeros(2, d)
    test[0, 1], test[1, 2] = 0.5, 7.0
    logits = tuner(Batch({}, torch.tensor([1, 2]), torch.arange(2), test)).logits
    assert logits[:, :3].argmax(1).tolist() == [1, 2]


def test_l2p_selects_top_keys_per_sample(backbone):
    tuner = make("l2p", backbone, pool_size=4, top_k=2)
    batch = make_batch(backbone)
    with torch.no_grad():
        tuner.keys.copy_(torch.randn(4, backbone.dim))
        tuner.keys[3].copy_(batch.query[2])
    out = tuner(batch)
    sims = torch.nn.functional.cosine_similarity(batch.query[:, None], tuner.keys[None], dim=-1)
    torch.testing.assert_close(out.extras["similarity"], sims.topk(2, dim=1).values)


def test_unknown_tuner_option_is_a_usage_error(backbone):
    from promptcl.errors import UsageError

    with pytest.raises(UsageError, match="e_lenght"):
        make("dualprompt", backbone, e_lenght=3)
    with pytest.raises(UsageError, match="g_blocks"):
        make("dualprompt", backbone, g_blocks=[0, 7])


@pytest.mark.parametrize("name", ["hide", "norga"])
def test_hide_old_prompts_frozen_and_norga_gate_trains_on_the_first_task_only(name, backbone):
    tuner = make(name, backbone)
    tuner.begin_task(0, TASKS[0])
    if name == "norga":
        assert tuner.gate.requires_grad
    tuner.begin_task(1, TASKS[1])
    assert not tuner.prompts[0].requires_grad and tuner.prompts[1].requires_grad
    trained = {id(p) for g in tuner.param_groups() for p in g["params"]}
    assert id(tuner.prompts[0]) not in trained and id(tuner.prompts[1]) in trained
    if name == "norga":
        assert not tuner.gate.requires_grad and id(tuner.gate) not in trained


def test_hide_prompt_momentum_is_baked_in_at_the_end_of_a_task(backbone):
    tuner = make("hide", backbone, prompt_momentum=0.5, contrast_coeff=0.0).eval()
    tuner.begin_task(0, TASKS[0])
    tuner.end_task(0, TASKS[0], TaskData([make_batch(backbone, labels=[0, 1, 2, 0])]))
    tuner.begin_task(1, TASKS[1])
    with torch.no_grad():
        tuner.prompts[1].add_(1.0)
    expected = 0.5 * tuner.prompts[1].detach() + 0.5 * tuner.prompts[0].detach()
    tuner.end_task(1, TASKS[1], TaskData([make_batch(backbone, labels=[3, 4, 5, 3])]))
    torch.testing.assert_close(tuner.prompts[1].detach(), expected)


def coda_tensors(tuner, task):
    return {n: getattr(tuner, n)[task] for n in ("keys", "attention", "components")}


def test_coda_components_of_old_tasks_never_move(backbone):
    tuner = make("coda", backbone, ortho_mu=0.1)
    tuner.begin_task(0, TASKS[0])
    tuner.begin_task(1, TASKS[1])
    before = {n: t.clone() for n, t in coda_tensors(tuner, 0).items()}
    current = {n: t.clone() for n, t in coda_tensors(tuner, 1).items()}
    optimizer = torch.optim.Adam([p for g in tuner.param_groups() for p in g["params"]], lr=0.1)
    for step in range(3):
        train_step(tuner, make_batch(backbone, labels=[3, 4, 5, 3], seed=step), task=1)
        optimizer.step()
    for name, tensor in coda_tensors(tuner, 0).items():
        assert not tensor.requires_grad
        torch.testing.assert_close(tensor, before[name], atol=0, rtol=0)
        assert not torch.equal(getattr(tuner, name)[1], current[name])  # the new ones trained


def test_coda_new_components_start_orthonormal_and_orthogonal_to_the_old(backbone):
    tuner = make("coda", backbone, components_per_task=4)
    tuner.begin_task(0, TASKS[0])
    with torch.no_grad():  # as after training: old components no longer orthonormal
        for tensor in coda_tensors(tuner, 0).values():
            tensor.add_(torch.randn_like(tensor))
    tuner.begin_task(1, TASKS[1])
    for name in ("keys", "attention", "components"):
        old, new = getattr(tuner, name)[0].flatten(2), getattr(tuner, name)[1].flatten(2)
        for i in range(len(tuner.blocks)):
            eye = torch.eye(4)
            torch.testing.assert_close(new[i] @ new[i].T, eye, atol=1e-5, rtol=0)
            torch.testing.assert_close(old[i] @ new[i].T, torch.zeros(4, 4), atol=1e-5, rtol=0)


def test_coda_prompt_is_the_alpha_weighted_sum_of_components(backbone):
    from promptcl.tuners.coda.model import ortho_penalty

    tuner = make("coda", backbone, components_per_task=3)
    tuner.begin_task(0, TASKS[0])
    tuner.begin_task(1, TASKS[1])
    q = make_batch(backbone).query
    alpha = tuner.weights(q)  # (B, n_blocks, 6)
    K, A = tuner.stacked("keys"), tuner.stacked("attention")
    for b in range(len(q)):
        for m in range(6):
            want = torch.nn.functional.cosine_similarity(q[b] * A[0, m], K[0, m], dim=0)
            torch.testing.assert_close(alpha[b, 0, m], want)
    # new components start orthonormal: no penalty; a scaled copy is penalised
    assert ortho_penalty(K[0]) < 1e-10 and ortho_penalty(2 * K[0]) > 0.1


def test_task_data_map_over_ranks_sums_to_the_one_process_tensors():
    """Each batch is computed on one rank (round-robin) and the ranks' zero-filled results
    are summed: the sum over two simulated ranks equals one process exactly, in batch order,
    floating outputs in float32; a rank without a batch still learns the shapes."""
    torch.manual_seed(0)
    batches = [
        Batch({}, torch.arange(n), torch.arange(n), torch.randn(n, 3, dtype=torch.float64))
        for n in (4, 3, 5)
    ]

    def fn(batch):
        return batch.query * 2, batch.labels[:, None].repeat(1, 2)

    one = TaskData(batches).map(fn)
    ranks = [TaskData(batches, lambda p, r=r: p[r::2]).map(fn) for r in range(2)]
    summed = [a + b for a, b in zip(*ranks, strict=True)]
    assert one[0].dtype == torch.float32 and one[1].dtype == torch.int64
    assert torch.equal(one[0], torch.cat([b.query for b in batches]).float() * 2)
    for a, b in zip(one, summed, strict=True):
        assert torch.equal(a, b)
    idle = TaskData(batches[:1], lambda p: p[1::2]).map(fn)  # rank 1 of 2, one batch only
    assert idle[0].shape == (4, 3) and not idle[0].any()
