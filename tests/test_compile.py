"""torch.compile of the block computation (``Backbone.compile_blocks``) gives the eager outputs
and gradients, for a prefix method (dualprompt), an input-prompt method (l2p) and an edit method
(softtf's masks, over dualprompt and over l2p), with per-call state passed as arguments.

Backend ``aot_eager``: dynamo's graph capture and AOTAutograd's forward/backward graphs, run
with eager kernels; inductor's C++ code generation is left out (minutes per case on 2 shared
CPU cores). Each case compiles one graph per block (2) and costs 5-20 s of CPU.
"""

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_inputs, trained_tuner
from torch._dynamo.utils import counters

from promptcl.tuners import Batch

L2P = {"pool_size": 4, "top_k": 2}
CASES = [  # every method on one tiny backbone, each backbone with prompts and with edits
    ("tiny-vit", "dualprompt", {}),
    ("tiny-bert", "l2p", L2P),
    ("tiny-bert", "softtf", {}),
    ("tiny-vit", "softtf", {"base": "l2p", "base_options": L2P}),
]
ATOL = 1e-5


def make_batch(backbone, n, length, seed):
    inputs = tiny_inputs(backbone, n, length, seed)
    return Batch(inputs, torch.arange(n) % 3 + 3, torch.arange(n), backbone.features(inputs))


def step(tuner, batch):
    """Logits and the gradients of the trained tensors of one training step on task 1."""
    out = tuner(batch, task=torch.ones_like(batch.labels))
    loss = F.cross_entropy(out.logits, batch.labels) + sum(tuner.loss_terms(batch, out, 1).values())
    params = [p for g in tuner.param_groups() for p in g["params"]]
    return out.logits.detach(), torch.autograd.grad(loss, params)


@pytest.mark.parametrize(("name", "method", "options"), CASES)
def test_compiled_blocks_give_the_eager_outputs_and_gradients(name, method, options):
    tuner = trained_tuner(name, method, options, tasks=2)
    backbone = tuner.backbone
    # two batch and sequence sizes: dynamic shapes, no recompilation
    batches = [make_batch(backbone, 4, 7, seed=0), make_batch(backbone, 3, 10, seed=1)]
    eager = [step(tuner.train(), b) for b in batches]
    counters.clear()
    backbone.compile_blocks(backend="aot_eager")
    compiled = [step(tuner, b) for b in batches]
    assert counters["stats"]["unique_graphs"] == backbone.num_blocks  # one graph per block
    assert not counters["graph_break"]
    for (logits, grads), (eager_logits, eager_grads) in zip(compiled, eager, strict=True):
        torch.testing.assert_close(logits, eager_logits, atol=ATOL, rtol=0)
        for grad, expected in zip(grads, eager_grads, strict=True):
            torch.testing.assert_close(grad, expected, atol=ATOL, rtol=0)
