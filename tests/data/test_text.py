"""Characters as tokens: the vocabulary's round trip and its refusal of unknown characters."""

import numpy as np
import pytest

from jaxdl.data.text import decode_text, encode_text


def test_text_round_trips_through_the_vocabulary():
    vocabulary = "\n abc"
    ids = encode_text("ab c\na", vocabulary)
    np.testing.assert_array_equal(ids, [2, 3, 1, 4, 0, 2])
    assert decode_text(ids, vocabulary) == "ab c\na"
    as_bytes = np.frombuffer(b"ab", np.uint8)
    np.testing.assert_array_equal(encode_text(b"ab", vocabulary), encode_text(as_bytes, vocabulary))
    with pytest.raises(ValueError, match=r"\['z'\]"):
        encode_text("abz", vocabulary)
