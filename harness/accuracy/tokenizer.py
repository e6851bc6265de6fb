"""A byte-level BPE tokenizer for random-weight cases, which ship no tokenizer.

Trained in a fraction of a second with the ``tokenizers`` library on a fixed corpus, it is
the same for every run of a given corpus and vocabulary size, and encodes any text (every
byte is in its alphabet). Its vocabulary fits inside the tiny model's, so every id is a
valid embedding row.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

PAD, BOS, EOS = "<pad>", "<s>", "</s>"
# 256 byte symbols and the special tokens must fit; merges use the rest.
_MIN_VOCABULARY = 256 + 3


def train_tokenizer(corpus: Iterable[str], vocab_size: int) -> Any:
    """Train a byte-level BPE tokenizer of at most ``vocab_size`` tokens; return a Transformers fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    if vocab_size < _MIN_VOCABULARY:
        raise ValueError(
            f"vocabulary of {vocab_size} tokens is too small for a byte-level tokenizer; it needs {_MIN_VOCABULARY}"
        )
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[PAD, BOS, EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(list(corpus), trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token=PAD, bos_token=BOS, eos_token=EOS)
