"""Characters as tokens: text to token ids and back, by a fixed vocabulary string (one character per id)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def encode_text(data: np.ndarray | bytes | str, vocabulary: str) -> np.ndarray:
    """Characters -> token ids (position in `vocabulary`).

    Args:
      data: the text as str, bytes, or uint8 array of ASCII bytes.
      vocabulary: the token table, one character per id.

    Returns:
      int32 [N] token ids.

    Raises:
      ValueError: a character of the text is not in the vocabulary.
    """
    if isinstance(data, str):
        data = data.encode("latin-1")
    data = np.frombuffer(bytes(data), dtype=np.uint8) if not isinstance(data, np.ndarray) else data.astype(np.uint8)
    table = np.full(256, -1, np.int32)
    table[np.frombuffer(vocabulary.encode("latin-1"), np.uint8)] = np.arange(len(vocabulary), dtype=np.int32)
    ids = table[data]
    if (ids < 0).any():
        missing = sorted({chr(c) for c in np.unique(data[ids < 0])})
        raise ValueError(f"Characters {missing} are not in the {len(vocabulary)}-character vocabulary; fix data.vocabulary.")
    return ids


def decode_text(ids: Sequence[int] | np.ndarray, vocabulary: str) -> str:
    """Token ids -> text."""
    return "".join(vocabulary[int(i)] for i in np.asarray(ids).reshape(-1))
