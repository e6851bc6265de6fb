"""The byte-level tokenizer trained for random-weight cases."""

from __future__ import annotations

import pytest

from harness.accuracy import train_tokenizer

CORPUS = ["The capital of France is Paris", "Water is made of hydrogen and oxygen", "3 plus 4 equals 7"]


def test_tokenizer_is_the_same_on_every_training():
    first = train_tokenizer(CORPUS, 300)
    second = train_tokenizer(CORPUS, 300)

    assert first.get_vocab() == second.get_vocab()


def test_tokenizer_ids_fit_the_vocabulary():
    tokenizer = train_tokenizer(CORPUS, 300)
    ids = tokenizer("Text it never saw: Zürich, 42 °C")["input_ids"]

    assert len(tokenizer) <= 300
    assert max(ids) < 300
    assert tokenizer.decode(ids) == "Text it never saw: Zürich, 42 °C"


def test_tokenizer_has_pad_and_end_tokens():
    tokenizer = train_tokenizer(CORPUS, 300)

    assert tokenizer.pad_token_id is not None
    assert tokenizer.eos_token_id is not None


def test_tokenizer_rejects_vocabulary_below_byte_alphabet():
    with pytest.raises(ValueError, match="too small for a byte-level tokenizer"):
        train_tokenizer(CORPUS, 128)
