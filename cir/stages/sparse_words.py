"""Word terms for the sparse heads: detectors that put a scene's words into its vector, beside the free terms.

A distilled head's terms are free: they rank well, but "then" or "strikeouts" stand for conjunctions and positions,
not for their words (docs/sparse-terms.md). `WordHeads` adds a second part to every vector, made of words only:

- an image's words: a detector over its stage-one ViT tokens (a small MLP per token, the maximum over the tokens:
  a word is in the image if some patch shows it), each detected word at weight `image_weight`;
- a query's words: the words the edit brings (the same detector over the query's fused text tokens), at
  `edit_weight`, and its reference's words (the image detector on the reference's tokens) at `reference_weight`,
  except the words in more than half the training images (`carry`: their posting lists cost more than they tell).

The free part is the distilled head's output with the word terms taken out, times `free_scale`, cut so that the
vector keeps its cap of terms in all. Words lead a vector (precision), every detected word is among its terms
(recall), the edit's word leads its target's explanation, and the free terms still order the images that share
their words (recall@50).
"""

from __future__ import annotations

import torch
from torch import nn

WORD_THRESHOLD = 0.0  # a word is detected where its logit is above this (probability one half)


class TokenWordDetector(nn.Module):
    """(B, T, D) tokens -> (B, words) logits: an MLP per token, the maximum over the (unmasked) tokens."""

    def __init__(self, dim: int, hidden: int, words: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, hidden),
                                 nn.GELU(), nn.Linear(hidden, words))

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        logits = self.mlp(tokens.float())
        if mask is not None:
            logits = logits.masked_fill(~mask.bool()[..., None], torch.finfo(logits.dtype).min)
        return logits.max(1).values


class WordHeads(nn.Module):
    """The word part of the sparse vectors (module docstring): `words` and their WordPiece ids, the two detectors,
    which words a query carries over from its reference, and the weights of the parts."""

    def __init__(
        self,
        words: list[str],
        pieces: list[list[int]],
        image_dim: int,
        query_dim: int,
        hidden: int = 384,
        carry: list[bool] | None = None,
        image_weight: float = 1.0,
        reference_weight: float = 1.0,
        edit_weight: float = 2.0,
        free_scale: float = 0.5,
        free_caps: list[int] | None = None,
    ) -> None:
        super().__init__()
        if len(words) != len(pieces):
            raise ValueError(f"{len(words)} words but {len(pieces)} WordPiece lists")
        self.words, self.pieces = list(words), [list(p) for p in pieces]
        self.hidden = hidden
        self.image = TokenWordDetector(image_dim, hidden, len(words))
        self.edit = TokenWordDetector(query_dim, hidden, len(words))
        self.register_buffer("carry", torch.tensor(carry if carry is not None else [True] * len(words)), persistent=False)
        self.image_weight, self.reference_weight = image_weight, reference_weight
        self.edit_weight, self.free_scale = edit_weight, free_scale
        self.free_caps = list(free_caps) if free_caps is not None else None  # the distilled heads' own (query, image) caps
        rows = [i for i, p in enumerate(self.pieces) for _ in p]
        cols = [t for p in self.pieces for t in p]
        self.register_buffer("piece_rows", torch.tensor(rows, dtype=torch.long), persistent=False)
        self.register_buffer("piece_cols", torch.tensor(cols, dtype=torch.long), persistent=False)

    def settings(self) -> dict:
        """What `from_settings` needs besides the tensors (saved in the heads file's metadata)."""
        return {"words": self.words, "pieces": self.pieces, "hidden": self.hidden, "carry": self.carry.tolist(),
                "image_weight": self.image_weight, "reference_weight": self.reference_weight,
                "edit_weight": self.edit_weight, "free_scale": self.free_scale, "free_caps": self.free_caps}

    @classmethod
    def from_settings(cls, settings: dict, image_dim: int, query_dim: int) -> "WordHeads":
        return cls(image_dim=image_dim, query_dim=query_dim, **settings)

    def image_words(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, words) weights of the words detected in images."""
        return self.image_weight * (self.image(tokens) > WORD_THRESHOLD).float()

    def query_words(self, fused: torch.Tensor, mask: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
        """(B, words) weights: the edit's words, and the reference's carried words, whichever is heavier."""
        carried = (self.image(references) > WORD_THRESHOLD) & self.carry
        edit = self.edit(fused, mask) > WORD_THRESHOLD
        return torch.maximum(self.reference_weight * carried.float(), self.edit_weight * edit.float())

    def terms(self, word_weights: torch.Tensor, num_terms: int) -> torch.Tensor:
        """(B, words) word weights -> (B, num_terms) term weights (every WordPiece of a word gets its weight)."""
        out = torch.zeros(len(word_weights), num_terms, dtype=word_weights.dtype, device=word_weights.device)
        out[:, self.piece_cols] = word_weights[:, self.piece_rows]
        return out

    def compose(self, free: torch.Tensor, word_weights: torch.Tensor, cap: int) -> torch.Tensor:
        """The vectors: word terms, then the `free` head's other terms times `free_scale`, at most `cap` in all."""
        words = self.terms(word_weights, free.shape[1])
        free = free.clone()
        free[:, self.piece_cols] = 0
        room = cap - (words > 0).sum(1, keepdim=True)
        values, cols = free.topk(min(cap, free.shape[1]), dim=1)
        rank = torch.arange(values.shape[1], device=values.device)[None, :]
        kept = torch.zeros_like(free).scatter_(1, cols, values * (rank < room))
        return words + self.free_scale * kept
