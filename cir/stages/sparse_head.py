"""The dense-to-sparse head: a dense embedding -> Linear -> LayerNorm -> vocabulary logits -> log(1 + relu).

The vocabulary projection is stage one's WordPiece embedding table (plus a learned bias), so every dimension is a word
from the start. It stays tied and frozen (a head of a few ten thousand parameters), or with `trainable_vocab` it is
trained from there: each term gets its own direction and can stand for a conjunction ("red circle at the top left")
that few images share, which is what keeps posting lists short; a saved head holds its table then (about 8 MB in
fp16). Queries and images have separate heads. Terms are the 30,522 WordPiece entries ([DEC] and [ENC] are not terms).
With `words` (cir.stages.sparse_words.WordHeads) the vectors also hold word terms from detectors over the stage-one
tokens, the head's own terms beneath them; such heads need the tokens as well as the embeddings.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

NUM_TERMS = 30522


class SparseHead(nn.Module):
    def __init__(self, dim: int, hidden: int, word_embeddings: torch.Tensor, trainable_vocab: bool = False) -> None:
        super().__init__()
        self.linear = nn.Linear(dim, hidden)
        self.norm = nn.LayerNorm(hidden)
        table = word_embeddings[:NUM_TERMS].detach().clone()
        if trainable_vocab:
            self.vocab = nn.Parameter(table)
        else:
            self.register_buffer("vocab", table, persistent=False)
        self.bias = nn.Parameter(torch.zeros(NUM_TERMS))

    def logits(self, dense: torch.Tensor) -> torch.Tensor:
        """(B, D) dense embeddings -> (B, 30522) term logits (a weight is log(1 + relu(logit)))."""
        return self.norm(self.linear(dense)) @ self.vocab.t() + self.bias

    def forward(self, dense: torch.Tensor) -> torch.Tensor:
        """(B, D) dense embeddings -> (B, 30522) non-negative term weights."""
        return torch.log1p(torch.relu(self.logits(dense)))


class SparseEncoder(nn.Module):
    """The query head and the image head, with the per-vector term cap applied at inference."""

    def __init__(
        self,
        dim: int,
        hidden: int,
        word_embeddings: torch.Tensor,
        max_query_terms: int = 32,
        max_image_terms: int = 64,
        trainable_vocab: bool = False,
        words=None,
    ):
        super().__init__()
        self.query = SparseHead(dim, hidden, word_embeddings, trainable_vocab)
        self.image = SparseHead(dim, hidden, word_embeddings, trainable_vocab)
        self.max_query_terms = max_query_terms
        self.max_image_terms = max_image_terms
        self.words = words  # cir.stages.sparse_words.WordHeads, or None

    @classmethod
    def for_model(cls, model, **kwargs) -> "SparseEncoder":
        table = model.stage1.text_encoder.embeddings.word_embeddings.weight
        return cls(model.config.embed_dim, model.config.text.hidden_size, table, **kwargs)

    @torch.inference_mode()
    def encode_images(self, embeddings, tokens=None, batch_size: int = 4096) -> sp.csr_matrix:
        """Sparse CSR term weights of images from their stage-one embeddings (and ViT tokens, which heads with word
        terms read), at most `max_image_terms` each."""
        self._need_tokens(tokens, "image tokens")
        return self._encode(self.image, self.max_image_terms, embeddings, batch_size,
                            lambda rows: self.words.image_words(_tensor(tokens, rows)))

    @torch.inference_mode()
    def encode_queries(self, embeddings, fused=None, mask=None, references=None, batch_size: int = 4096) -> sp.csr_matrix:
        """Sparse CSR term weights of queries from their stage-one embeddings (and, for heads with word terms, their
        fused text tokens with its mask and their references' ViT tokens), at most `max_query_terms` each."""
        self._need_tokens(fused if references is not None else None, "fused query tokens and reference tokens")
        return self._encode(self.query, self.max_query_terms, embeddings, batch_size,
                            lambda rows: self.words.query_words(_tensor(fused, rows), _tensor(mask, rows),
                                                                _tensor(references, rows)))

    def distilled(self) -> "SparseEncoder":
        """These heads without their word terms: the distilled terms alone, at the caps they were trained with
        (`word_terms: false`; the same parameters, shared)."""
        if self.words is None:
            return self
        clone = copy.copy(self)
        clone._modules = {k: v for k, v in self._modules.items() if k != "words"}
        clone.__dict__["words"] = None
        if self.words.free_caps:
            clone.max_query_terms, clone.max_image_terms = self.words.free_caps
        return clone

    def _need_tokens(self, tokens, what: str) -> None:
        if self.words is not None and tokens is None:
            from ..errors import CirError

            raise CirError(f"these sparse heads have word terms, which are read from the {what}: pass them")

    def _encode(self, head: "SparseHead", cap: int, embeddings, batch_size: int, word_weights) -> sp.csr_matrix:
        dense = torch.as_tensor(np.asarray(embeddings, dtype=np.float32))
        blocks = []
        for start in range(0, len(dense), batch_size):
            rows = slice(start, start + batch_size)
            weights = head(dense[rows])
            if self.words is not None:
                weights = self.words.compose(weights, word_weights(rows), cap)
            blocks.append(top_terms(weights, cap))
        return sp.vstack(blocks, format="csr") if blocks else sp.csr_matrix((0, NUM_TERMS), dtype=np.float32)

    def save(self, path: str | Path) -> Path:
        from safetensors.torch import save_file

        from ..io import atomic_path

        tensors = {k: v.detach().to(torch.float16).contiguous() for k, v in self.state_dict().items()}
        meta = {"max_query_terms": str(self.max_query_terms), "max_image_terms": str(self.max_image_terms)}
        if self.words is not None:
            meta["word_heads"] = json.dumps(self.words.settings())
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata=meta)
        return Path(path)

    @classmethod
    def load(cls, path: str | Path, model) -> "SparseEncoder":
        """Read a head saved by `save`; a missing, unreadable (e.g. truncated) or foreign file is a one-line
        CirError naming the file and what is wrong with it."""
        from safetensors import SafetensorError, safe_open

        from ..errors import DatasetNotFoundError, FormatError

        if not Path(path).is_file():
            raise DatasetNotFoundError(f"sparse head checkpoint not found: {path} (train one with `cir train sparse`)")
        try:
            with safe_open(str(path), "pt") as f:
                meta = f.metadata() or {}
                state = {k: f.get_tensor(k).float() for k in f.keys()}
        except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise FormatError(f"{path}: not a readable safetensors file (truncated or another format: {reason})") from exc
        try:
            caps = {key: int(meta.get(key, default)) for key, default in (("max_query_terms", 32), ("max_image_terms", 64))}
        except ValueError as exc:
            raise FormatError(f"{path}: metadata max_query_terms / max_image_terms is not a whole number") from exc
        words = None
        if "word_heads" in meta:
            from .sparse_words import WordHeads

            try:
                words = WordHeads.from_settings(json.loads(meta["word_heads"]), model.config.encoder_width,
                                                model.config.text.hidden_size)
            except (ValueError, TypeError) as exc:
                raise FormatError(f"{path}: metadata word_heads is not what WordHeads saves ({exc})") from exc
        # a head trained with its own table saved it
        encoder = cls.for_model(model, trainable_vocab="query.vocab" in state, words=words, **caps)
        _check_keys(path, encoder.state_dict(), state)
        encoder.load_state_dict(state)
        return encoder.eval()


def _check_keys(path: str | Path, expected: dict[str, torch.Tensor], found: dict[str, torch.Tensor]) -> None:
    """One line for a file that is not a sparse head of this model: counts and the first keys missing, unexpected
    or of the wrong shape (a stage-one or stage-two checkpoint given as the head is said to be one)."""
    from ..errors import FormatError

    def listing(label: str, keys: list[str]) -> str:
        return f"{len(keys)} {label} ({', '.join(keys[:2])}{', ...' if len(keys) > 2 else ''})" if keys else ""

    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    wrong = sorted(k for k in set(expected) & set(found) if tuple(expected[k].shape) != tuple(found[k].shape))
    problems = [text for text in (listing("missing", missing), listing("unexpected", unexpected),
                                  listing("of the wrong shape", wrong)) if text]
    if not problems:
        return
    what = "not a sparse head for this model"
    if any(k.split(".", 1)[0] in ("stage1", "stage2") for k in unexpected):
        what = "a stage-one/stage-two model checkpoint, not a sparse head (`cir train sparse` writes one)"
    raise FormatError(f"{path}: {what}: keys {'; '.join(problems)}")


def _tensor(values, rows: slice) -> torch.Tensor:
    """Rows of an array or tensor (a memory-mapped cache included) as a float or bool tensor."""
    part = values[rows]
    return part if isinstance(part, torch.Tensor) else torch.from_numpy(np.array(part))


def top_terms(weights: torch.Tensor, cap: int) -> sp.csr_matrix:
    """Keep each row's `cap` largest non-zero weights, as a float32 CSR matrix."""
    values, cols = weights.topk(min(cap, weights.shape[1]), dim=1)
    values, cols = values.numpy(), cols.numpy()
    rows = np.repeat(np.arange(len(values)), values.shape[1])
    keep = values.reshape(-1) > 0
    return sp.csr_matrix(
        (values.reshape(-1)[keep], (rows[keep], cols.reshape(-1)[keep])), shape=(len(values), NUM_TERMS), dtype=np.float32
    )
