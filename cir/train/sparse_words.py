"""Training the word terms of the sparse heads (cir.stages.sparse_words) on top of distilled ones.

`cir train sparse` distils the free terms; `cir train sparse-words` then trains the two word detectors with a
binary cross-entropy per word, the distilled heads frozen: the image detector on every training image's words, the
edit detector on every training query's edit words. Images have words from `word_supervision`: `scene` (the
synthetic benchmark's scene words, from the training split's metadata, never saved with the weights) or
`captions` (the content words of the texts of the queries whose target an image is, for any benchmark). A query's
edit words are the synthetic edit's own (`scene`) or its target's words that its reference lacks (`captions`).

A query carries its reference's words over except those in more than `max_reference_share` of the training images:
a word in most images walks a long posting list for little it tells ("large" and "small" are in 85 % of the
synthetic images). The heads file it writes holds the frozen distilled heads and the detectors together.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import CirError
from ..stages.sparse_head import NUM_TERMS, SparseEncoder
from ..stages.sparse_words import WordHeads
from .data import TripletData, TripletTask
from .mining import precompute_stage_one


def word_matrix(word_lists: Sequence[Sequence[str]], vocabulary: dict[str, int]) -> torch.Tensor:
    """(rows, words) 0/1 float targets: which vocabulary words each row has (words outside it are ignored)."""
    out = torch.zeros(len(word_lists), len(vocabulary))
    for i, words in enumerate(word_lists):
        cols = [vocabulary[w] for w in words if w in vocabulary]
        out[i, cols] = 1.0
    return out


class SparseWordsTask(TripletTask):
    def __init__(
        self,
        model,
        data: TripletData,
        val_benchmark=None,
        val_queries: int | None = 1000,
        sparse_head: str | None = None,
        word_supervision: str = "captions",
        hidden: int = 384,
        image_weight: float = 1.0,
        reference_weight: float = 1.0,
        edit_weight: float = 2.0,
        free_scale: float = 0.5,
        max_reference_share: float = 0.5,
        max_image_terms: int | None = None,
        max_query_terms: int | None = None,
        image_words: list[list[str]] | None = None,
        edit_words: list[list[str]] | None = None,
        val_words: dict | None = None,
        cache=None,
    ) -> None:
        if sparse_head is None:
            raise CirError("train_sparse_words: options.sparse_head must name the distilled heads "
                           "(`cir train sparse` writes runs/sparse/sparse.safetensors)")
        if word_supervision not in ("scene", "captions"):
            raise CirError(f"train_sparse_words: word_supervision must be scene or captions, not {word_supervision!r}")
        super().__init__(model, data, val_benchmark, val_queries)
        tokenizer = model.tokenizer
        if image_words is None:
            from .term_words import caption_words

            image_words = caption_words(tokenizer, data)
        words = sorted({w for ws in image_words for w in ws})
        if not words:
            raise CirError("train_sparse_words: the training images have no words to learn")
        vocabulary = {w: i for i, w in enumerate(words)}
        self.image_targets = word_matrix(image_words, vocabulary)
        if edit_words is None:  # captions: what the target has that the reference lacks
            edit_words = [sorted(set(image_words[t]) - set(image_words[r])) for r, t in zip(data.ref_rows, data.target_rows)]
        self.edit_targets = word_matrix(edit_words, vocabulary)
        share = self.image_targets.mean(0)
        pieces = [[t for t in tokenizer.wordpiece_ids(w) if t < NUM_TERMS] for w in words]
        heads = WordHeads(words, pieces, model.config.encoder_width, model.config.text.hidden_size, hidden,
                          carry=(share <= max_reference_share).tolist(), image_weight=image_weight,
                          reference_weight=reference_weight, edit_weight=edit_weight, free_scale=free_scale)
        free = SparseEncoder.load(sparse_head, model).distilled()
        heads.free_caps = [free.max_query_terms, free.max_image_terms]
        free.requires_grad_(False)
        free.words = heads
        free.max_image_terms = max_image_terms or free.max_image_terms
        free.max_query_terms = max_query_terms or free.max_query_terms
        self.module = free
        model.stage1.requires_grad_(False)
        self.image_tokens, _, self.fused, _, self.mask, _ = precompute_stage_one(model, data, cache)
        self.val_words = val_words
        self.cache = cache

    def batches(self, batch_size: int, rng: np.random.Generator, workers: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(queries, images) per step: every query and every training image once an epoch."""
        steps = max(1, self.num_batches(batch_size))
        images = np.array_split(rng.permutation(len(self.image_targets)), steps)
        for idx, rows in zip(self.query_batches(batch_size, rng), images):
            yield idx, rows

    def loss(self, batch) -> tuple[torch.Tensor, dict[str, float]]:
        idx, rows = batch
        words = self.module.words
        image = F.binary_cross_entropy_with_logits(words.image(self.image_tokens[rows]), self.image_targets[rows])
        edit = F.binary_cross_entropy_with_logits(words.edit(self.fused[idx], self.mask[idx]), self.edit_targets[idx])
        return image + edit, {"image_bce": float(image.detach()), "edit_bce": float(edit.detach())}

    @torch.inference_mode()
    def validate(self) -> dict[str, float]:
        from .sparse import validate_heads

        return validate_heads(self.model, self.cache, self.module, self.val_benchmark, self.val_words)

    def save_weights(self, path: Path) -> None:
        self.module.save(path)
