"""A frozen dual encoder with a method's prompts: the one scoring path of ``promptcl b2n``'s
evaluation and of a loaded b2n run's ``predict`` (models/b2n.py).

Class texts are tokenised from any list of names with the run's template and context layout,
so a dual encoder scores names it never saw in training as it scores the base classes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch

from promptcl.backbones import DualEncoder, build_dual_encoder
from promptcl.config import B2NConfig, build_dataclass
from promptcl.data.batching import make_processors
from promptcl.dual.context import ClassTexts, class_texts
from promptcl.dual.methods import get_method
from promptcl.engine import Engine
from promptcl.errors import UsageError

Scorer = Callable[[Mapping[str, torch.Tensor]], torch.Tensor]


class PromptedDualEncoder:
    """The dual encoder ``config.backbone`` names (or ``encoder``, built from it already) and
    ``config.method``'s prompts on ``engine``. The prompts start as the method initialises them
    from the class texts of ``base_names`` (seeded with ``config.seed``), until trained or
    loaded (``load_prompts``)."""

    def __init__(
        self,
        config: B2NConfig,
        engine: Engine,
        base_names: Sequence[str],
        template: str,
        encoder: DualEncoder | None = None,
    ) -> None:
        self.config, self.engine, self.device = config, engine, engine.device
        method_cls = get_method(config.method)
        options = build_dataclass(method_cls.config_class, config.tuner, config.method)
        self.layout = method_cls.text_layout(options)
        self.template = template
        self.encoder = encoder or build_dual_encoder(config.backbone, config.logit_scale)
        init_ids = self.class_texts(base_names).init_ids
        torch.manual_seed(config.seed)
        self.method = method_cls(options, self.encoder, init_ids)
        engine.prepare(self.encoder)
        engine.prepare(self.method)
        if config.train.compile:
            for tower in {id(t): t for t in (self.encoder.query, self.encoder.label)}.values():
                tower.compile_blocks()
        self.processors = make_processors(self.encoder.query, config.data)

    def class_texts(self, names: Sequence[str], template: str | None = None) -> ClassTexts:
        """Token ids of ``template`` (default: the run's) filled with each name."""
        tower = self.encoder.label
        n_ctx, ctx_init = self.layout
        return class_texts(
            tower.tokenizer, list(names), template or self.template, n_ctx, ctx_init,
            tower.max_length,
        )  # fmt: skip

    @torch.no_grad()
    def scorer(self, texts: ClassTexts) -> Scorer:
        """A function from a batch of query inputs to their scores (B, C) over the classes of
        ``texts``: logit_scale * cos(f(x), g(class text)), class features computed once (or per
        query, by methods that condition them on it: ``DualMethod.classifier``)."""
        method, encoder = self.method, self.encoder
        method.eval()
        with self.engine.autocast():
            classify = method.classifier(encoder, texts.inputs(self.device))
            prompts = method.query_prompts()

        def scores(inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
            with torch.no_grad(), self.engine.autocast():
                queries = encoder.encode_queries(inputs, prompts)
                return encoder.scores(queries, classify(queries))

        return scores

    def load_prompts(self, tensors: dict[str, torch.Tensor], source: str) -> None:
        """Trained tensors of an earlier run into the method; ``source`` names where they came
        from in the error when they do not fit it."""
        expected = self.method.state_dict()
        shapes = {k: tuple(v.shape) for k, v in tensors.items()}
        if shapes != {k: tuple(v.shape) for k, v in expected.items()}:
            raise UsageError(
                f"{source} does not hold {self.config.method} prompts of these options; "
                "use the config of the run that made it"
            )
        self.method.load_state_dict(tensors)
