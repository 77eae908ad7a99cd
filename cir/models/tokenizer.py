"""BLIP's text tokenizer: uncased BERT WordPiece plus `[DEC]` and `[ENC]`, with `[ENC]` in place of `[CLS]`.

Reproduces the reference ids exactly: lower-casing, accent stripping, `[CLS] ... [SEP]`, right padding to the longest
text of the call, and position 0 overwritten by `[ENC]` (so `[CLS]` never reaches a model).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Iterable, Sequence

import torch

VOCAB_RESOURCE = "bert-base-uncased-vocab.txt"


def default_vocab_path() -> Path:
    """The bert-base-uncased vocab.txt shipped in `cir/assets`."""
    return Path(str(resources.files("cir").joinpath("assets").joinpath(VOCAB_RESOURCE)))


class BlipTokenizer:
    """`tok(texts) -> (input_ids, attention_mask)`, int64 tensors of shape (len(texts), longest)."""

    DEC_TOKEN = "[DEC]"
    ENC_TOKEN = "[ENC]"

    def __init__(self, vocab_path: str | Path | None = None, max_length: int = 512) -> None:
        from transformers import BertTokenizer

        path = Path(vocab_path) if vocab_path is not None else default_vocab_path()
        if not path.is_file():
            from ..errors import DatasetNotFoundError

            raise DatasetNotFoundError(f"WordPiece vocabulary not found: {path}")
        # transformers 5: `vocab=` takes the file; BertTokenizerFast(vocab_file=...) would silently ignore it.
        self._tok = BertTokenizer(vocab=str(path), do_lower_case=True)
        self.base_vocab_size = len(self._tok)
        self._tok.add_special_tokens({"bos_token": self.DEC_TOKEN})
        self._tok.add_special_tokens({"additional_special_tokens": [self.ENC_TOKEN]})
        self.max_length = max_length
        self.pad_id = self._tok.pad_token_id
        self.cls_id = self._tok.cls_token_id
        self.sep_id = self._tok.sep_token_id
        self.dec_id = self._tok.convert_tokens_to_ids(self.DEC_TOKEN)
        self.enc_id = self._tok.convert_tokens_to_ids(self.ENC_TOKEN)

    def __len__(self) -> int:
        return len(self._tok)

    def __call__(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids with `[ENC]` at position 0 and the padding mask (1 = real token) for a batch of texts.

        Texts longer than `max_length` tokens (the position-embedding limit) are cut, keeping the final `[SEP]`.
        """
        if isinstance(texts, str):
            raise TypeError("BlipTokenizer takes a list of texts, not a single string")
        if not texts:
            empty = torch.zeros((0, 0), dtype=torch.long)
            return empty, empty.clone()
        batch = self._tok(
            list(texts), padding="longest", truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        input_ids = batch["input_ids"].to(torch.long)
        input_ids[:, 0] = self.enc_id
        return input_ids, batch["attention_mask"].to(torch.long)

    def wordpiece_ids(self, text: str) -> list[int]:
        """WordPiece ids of `text` without special tokens (the terms a sparse vector is made of)."""
        return list(self._tok.encode(text, add_special_tokens=False))

    def words(self, text: str) -> list[str]:
        """The words of `text` as the tokenizer splits them before WordPiece (lower-cased, punctuation apart)."""
        backend = self._tok.backend_tokenizer
        return [word for word, _ in backend.pre_tokenizer.pre_tokenize_str(backend.normalizer.normalize_str(text))]

    def pieces(self, word: str) -> list[str]:
        """The WordPieces of one word ("cyan" -> ["cy", "##an"])."""
        return self._tok.convert_ids_to_tokens(self.wordpiece_ids(word))

    def join_pieces(self, weighted: Sequence[tuple[str, float]], words: Iterable[str]) -> list[tuple[str, float]]:
        """(WordPiece, weight) pairs with the pieces of each of `words` that all appear joined back into the word,
        its weight their sum ("cy" 0.6, "##an" 0.5 -> "cyan" 1.1), largest first; other pieces stay as they are.
        Longer words are joined first, and a piece joins one word at most."""
        left = dict(weighted)
        joined = {}
        for word in sorted(set(words), key=lambda w: (-len(w), w)):
            parts = self.pieces(word)
            if len(parts) > 1 and all(p in left for p in parts):
                joined[word] = sum(left.pop(p) for p in parts)
        return sorted({**left, **joined}.items(), key=lambda item: -item[1])

    def id_to_token(self, token_id: int) -> str:
        """The vocabulary entry for one id (`##` marks a word continuation)."""
        return self._tok.convert_ids_to_tokens(int(token_id))

    def token_to_id(self, token: str) -> int:
        return int(self._tok.convert_tokens_to_ids(token))
