"""Training the dense-to-sparse heads by distilling stage one's dense similarities.

Loss = KL(teacher || student) over in-batch images (targets, references, and for each query `mined` images drawn
afresh every step from its `mined_pool` nearest stage-one neighbours among the training images: the ranking that
decides Recall@50 is among those), with the teacher the frozen dense similarities at `teacher_temp` and the student
the sparse dot products, plus FLOPs regularisers with separate weights for queries and images, ramped up
quadratically over `ramp_steps`. Expansion control: each query is, with a probability annealed from
1 to `min_restrict` over `anneal_steps`, restricted to its text's WordPieces plus its reference image's top `ref_terms`
terms.

Terms that mean their words (`word_supervision`, see `term_words`): every image and query has words (its scene's,
or its captions'), and three weighted losses hold the vectors to them: `image_word_weight` (image top-10 weight off
its words, and each of its words up to `word_margin`), `query_word_weight` (the same share for queries, against
their target's words and their text's content words), `new_word_weight` (each word the edit brings, up to
`new_word_margin` in the query), and `free_below_weight` (every other term held `free_gap` below the vector's
lightest word, images and queries). `init_head` starts from a saved head (e.g. the shipped one) instead of the
word table.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import CirError
from ..stages.sparse_head import NUM_TERMS, SparseEncoder
from .data import TripletData, TripletTask
from .mining import mine_negatives, precompute_stage_one
from ..index.sparse import expected_flops


PRECISION_TERMS = 10  # the top terms whose weight term precision measures (cir.eval.term_metrics)


def flops_penalty(weights: torch.Tensor) -> torch.Tensor:
    """SPLADE's FLOPs regulariser: sum over terms of the squared mean activation."""
    return weights.mean(0).pow(2).sum()


def keep_top(weights: torch.Tensor, k: int) -> torch.Tensor:
    """Zero all but each row's k largest weights (gradients flow through the kept ones)."""
    threshold = weights.topk(min(k, weights.shape[1]), dim=1).values[:, -1:]
    return weights * (weights >= threshold)


class SparseTask(TripletTask):
    def __init__(
        self,
        model,
        data: TripletData,
        val_benchmark=None,
        val_queries: int | None = 1000,
        query_flops: float = 3e-3,
        image_flops: float = 1e-3,
        ramp_steps: int = 500,
        anneal_steps: int = 1000,
        ref_terms: int = 8,
        teacher_temp: float | None = None,
        max_query_terms: int = 32,
        max_image_terms: int = 64,
        mined: int = 0,
        trainable_vocab: bool = False,
        mined_pool: int | None = None,
        word_supervision: str | None = None,
        image_word_weight: float = 0.0,
        query_word_weight: float = 0.0,
        new_word_weight: float = 0.0,
        word_margin: float = 1.0,
        new_word_margin: float = 2.0,
        min_restrict: float = 0.0,
        free_below_weight: float = 0.0,
        free_gap: float = 0.5,
        init_head: str | None = None,
        image_words: list[list[str]] | None = None,
        val_words: dict | None = None,
        cache=None,
    ):
        if mined_pool is not None and mined_pool < mined:
            raise CirError(f"train_sparse: mined_pool ({mined_pool}) must be at least mined ({mined}), the images drawn from it")
        super().__init__(model, data, val_benchmark, val_queries)
        self.module = SparseEncoder.for_model(
            model, max_query_terms=max_query_terms, max_image_terms=max_image_terms, trainable_vocab=trainable_vocab
        )
        if init_head is not None:
            # word terms (cir train sparse-words) are trained on top of distilled heads, not here
            state, mine = SparseEncoder.load(init_head, model).distilled().state_dict(), self.module.state_dict()
            # e.g. a head with its own table (trainable_vocab) into one without, or the reverse
            shared = state.keys() & mine.keys()
            differ = sorted(set(state) ^ set(mine)) + [k for k in sorted(shared) if state[k].shape != mine[k].shape]
            if differ:
                raise CirError(f"train_sparse: init_head {init_head} does not fit this head "
                               f"(trainable_vocab: {trainable_vocab}): {', '.join(differ)} differ")
            self.module.load_state_dict(state)
        self.query_flops, self.image_flops = query_flops, image_flops
        self.ramp_steps, self.anneal_steps, self.ref_terms = ramp_steps, anneal_steps, ref_terms
        model.stage1.requires_grad_(False)
        _, self.image_emb, _, _, _, self.query_emb = precompute_stage_one(model, data, cache)
        self.mined_per_step = mined
        self.mined = mine_negatives(self.query_emb, self.image_emb, data, max(mined, mined_pool or 0)) if mined else None
        self.teacher_temp = teacher_temp or float(model.stage1.temp.clamp(1e-3, 0.5))
        self.text_terms = [
            torch.tensor(sorted(set(model.tokenizer.wordpiece_ids(q.text))), dtype=torch.long) for q in data.queries
        ]
        self.min_restrict = min_restrict
        self.word_weights = (image_word_weight, query_word_weight, new_word_weight)
        self.free_below = (free_below_weight, free_gap)
        self.margins = (float(np.expm1(word_margin)), float(np.expm1(new_word_margin)))  # as logits
        self.words = None
        if word_supervision is not None:
            from .term_words import WordTargets, caption_words

            if word_supervision not in ("scene", "captions"):
                raise CirError(f"train_sparse: word_supervision must be scene, captions or null, not {word_supervision!r}")
            if image_words is None:
                image_words = caption_words(model.tokenizer, data)
            self.words = WordTargets(model.tokenizer, data, image_words)
        self.val_words = val_words
        self.cache = cache
        self.step = 0

    def batches(self, batch_size: int, rng: np.random.Generator, workers: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray | None]]:
        """(queries, restriction draws, mined images) per step."""
        for idx in self.query_batches(batch_size, rng):
            yield idx, rng.random(len(idx)), self._draw_mined(idx, rng)

    def _draw_mined(self, idx: np.ndarray, rng: np.random.Generator) -> np.ndarray | None:
        """Each query's mined images for this step: `mined` of its pool at random (all of it when no larger)."""
        if self.mined is None:
            return None
        pool = self.mined[idx]
        if pool.shape[1] <= self.mined_per_step:
            return pool
        return np.take_along_axis(pool, rng.random(pool.shape).argsort(1)[:, : self.mined_per_step], 1)

    def _restrict(self, idx: np.ndarray, draws: np.ndarray, query_w: torch.Tensor, ref_w: torch.Tensor) -> torch.Tensor:
        """Zero the terms of restricted queries outside their text's WordPieces and the reference's top terms."""
        p_restrict = max(self.min_restrict, 1.0 - self.step / max(1, self.anneal_steps))
        restricted = np.flatnonzero(draws < p_restrict)
        if len(restricted) == 0:
            return query_w
        allowed = torch.ones(len(idx), NUM_TERMS, dtype=torch.bool)
        allowed[restricted] = False
        top_ref = ref_w[restricted].topk(self.ref_terms, dim=1).indices
        allowed[torch.from_numpy(restricted)[:, None], top_ref] = True
        for r in restricted:
            allowed[r, self.text_terms[idx[r]]] = True
        return query_w * allowed

    def loss(self, batch) -> tuple[torch.Tensor, dict[str, float]]:
        idx, draws, mined = batch
        data = self.data
        rows = [data.target_rows[idx], data.ref_rows[idx]]
        if mined is not None:
            seen = set(np.concatenate(rows).tolist())
            rows.append(np.array([r for r in dict.fromkeys(mined.ravel().tolist()) if r not in seen], dtype=np.int64))
        img_rows = torch.from_numpy(np.concatenate(rows))
        q_dense, i_dense = self.query_emb[idx], self.image_emb[img_rows]
        query_logits, image_logits = self.module.query.logits(q_dense), self.module.image.logits(i_dense)
        query_w, image_w = torch.log1p(torch.relu(query_logits)), torch.log1p(torch.relu(image_logits))
        query_w = self._restrict(idx, draws, query_w, image_w[len(idx) : 2 * len(idx)].detach())
        # train as searched: only each vector's top terms survive (the caps applied at inference)
        query_w = keep_top(query_w, self.module.max_query_terms)
        image_w = keep_top(image_w, self.module.max_image_terms)
        teacher = F.log_softmax(q_dense @ i_dense.t() / self.teacher_temp, dim=1)
        student = F.log_softmax(query_w @ image_w.t(), dim=1)
        kl = F.kl_div(student, teacher, log_target=True, reduction="batchmean")
        ramp = min(1.0, (self.step + 1) / self.ramp_steps) ** 2
        reg = ramp * (self.query_flops * flops_penalty(query_w) + self.image_flops * flops_penalty(image_w))
        self.step += 1
        logs = {
            "kl": kl.item(),
            "q_nnz": float((query_w > 0).sum(1).float().mean()),
            "d_nnz": float((image_w > 0).sum(1).float().mean()),
        }
        if self.words is not None:
            words, word_logs = self._word_loss(idx, img_rows.numpy(), query_w, image_w, query_logits, image_logits)
            reg = reg + words
            logs.update(word_logs)
        return kl + reg, logs

    def _word_loss(self, idx, img_rows, query_w, image_w, query_logits, image_logits) -> tuple[torch.Tensor, dict]:
        """The word losses of the module docstring, weighted, and each one's value for the log."""
        from .term_words import free_below_words, off_word_share, word_margin

        image_words, query_words = self.words.images.mask(img_rows), self.words.queries.mask(idx)
        new_words = self.words.new.mask(idx)
        parts = {
            "image_off": off_word_share(keep_top(image_w, PRECISION_TERMS), image_words),
            "image_gap": word_margin(image_logits, image_words, self.margins[0]),
            "query_off": off_word_share(keep_top(query_w, PRECISION_TERMS), query_words),
            "new_gap": word_margin(query_logits, new_words, self.margins[1]),
        }
        image_weight, query_weight, new_weight = self.word_weights
        loss = (image_weight * (parts["image_off"] + parts["image_gap"]) + query_weight * parts["query_off"]
                + new_weight * parts["new_gap"])
        free_weight, gap = self.free_below
        if free_weight:
            parts["image_free"] = free_below_words(image_w, image_words, gap)
            parts["query_free"] = free_below_words(query_w, query_words, gap)
            loss = loss + free_weight * (parts["image_free"] + parts["query_free"])
        return loss, {name: float(value.detach()) for name, value in parts.items()}

    @torch.inference_mode()
    def validate(self) -> dict[str, float]:
        return validate_heads(self.model, self.cache, self.module, self.val_benchmark, self.val_words)

    def save_weights(self, path: Path) -> None:
        self.module.save(path)


@torch.inference_mode()
def validate_heads(model, cache, heads: SparseEncoder, benchmark, val_words: dict | None) -> dict[str, float]:
    """Sparse stage one with `heads` on the validation queries: recall, terms per vector, multiply-adds per pair and,
    on the synthetic benchmark (`val_words`), the term metrics."""
    if benchmark is None:
        return {}
    from ..eval.metrics import evaluate
    from ..stages.sparse import SparseRetriever

    retriever = SparseRetriever(model, cache, sparse_head=heads.eval())
    retriever.index(benchmark.gallery)
    queries = retriever.encode_queries(benchmark.queries)
    run = retriever.rank(benchmark.queries, queries, 51)
    metrics = evaluate(benchmark, run)
    out = {f"val_sparse_{m}": metrics[m] for m in ("recall@1", "recall@10", "recall@50")}
    out["image_terms"] = float(retriever.image_vectors.getnnz(1).mean())
    out["query_terms"] = float(queries.getnnz(1).mean())
    out["flops_per_pair"] = expected_flops(queries, retriever.image_vectors)
    if val_words:
        from ..eval.term_metrics import term_metrics

        out.update(term_metrics(
            model.tokenizer, retriever.encoder.features.ids, retriever.image_vectors, benchmark.queries, queries,
            benchmark.targets, run, exclude_reference=benchmark.exclude_reference, **val_words,
        ))
    return out
