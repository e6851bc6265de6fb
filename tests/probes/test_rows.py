"""Editing batches by row and position: the operations the consistency probes build their inputs with."""

from __future__ import annotations

import pytest
import torch
import transformers

from harness.probes.rows import (
    mask_position_ids,
    ordinary_positions,
    replace_rows,
    special_token_ids,
    split_for_decoding,
    strip_padding,
    take_rows,
    token_layout,
    with_token,
)


def decoder_batch() -> dict:
    ids = torch.arange(12).reshape(2, 6) + 10
    mask = torch.ones(2, 6, dtype=torch.long)
    mask[0, :2] = 0
    pixels = torch.arange(2 * 3, dtype=torch.float32).reshape(2, 3)
    types = torch.zeros(2, 6, dtype=torch.long)
    return {"input_ids": ids, "attention_mask": mask, "pixel_values": pixels, "mm_token_type_ids": types}


def seq2seq_batch() -> dict:
    # Encoder and decoder of the same length, so shapes alone cannot tell them apart.
    return {
        "input_ids": torch.arange(8).reshape(2, 4) + 10,
        "attention_mask": torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]]),
        "decoder_input_ids": torch.arange(8).reshape(2, 4) + 100,
    }


def test_token_layout_of_decoder_and_seq2seq():
    decoder = token_layout(decoder_batch())
    seq2seq = token_layout(seq2seq_batch())

    assert (decoder.stream, decoder.masked, decoder.encoder_decoder) == ("input_ids", "input_ids", False)
    assert decoder.padding_moves_outputs
    assert (seq2seq.stream, seq2seq.masked, seq2seq.encoder_decoder) == ("decoder_input_ids", "input_ids", True)
    assert not seq2seq.padding_moves_outputs
    assert token_layout({"pixel_values": torch.zeros(1, 3, 4, 4)}) is None


def test_take_rows_slices_per_row_tensors_only():
    batch = {**decoder_batch(), "use_cache": True}
    taken = take_rows(batch, [1])

    assert taken["input_ids"].tolist() == [[16, 17, 18, 19, 20, 21]]
    assert taken["pixel_values"].tolist() == [[3.0, 4.0, 5.0]]
    assert taken["use_cache"] is True


def test_replace_rows_copies_only_named_rows():
    batch = decoder_batch()
    donor = {name: value + 1 for name, value in batch.items()}
    replaced = replace_rows(batch, donor, [1])

    assert torch.equal(replaced["input_ids"][0], batch["input_ids"][0])
    assert torch.equal(replaced["input_ids"][1], donor["input_ids"][1])
    assert torch.equal(replaced["pixel_values"][1], donor["pixel_values"][1])


def test_replace_rows_rejects_donor_of_other_shape():
    batch = decoder_batch()
    donor = {**batch, "input_ids": torch.zeros(2, 5, dtype=torch.long)}

    with pytest.raises(ValueError, match="cannot copy rows of 'input_ids'"):
        replace_rows(batch, donor, [1])


def test_strip_padding_drops_padded_positions():
    row = take_rows(decoder_batch(), [0])
    stripped, kept = strip_padding(row, token_layout(row))

    assert kept.tolist() == [2, 3, 4, 5]
    assert stripped["input_ids"].tolist() == [[12, 13, 14, 15]]
    assert stripped["attention_mask"].tolist() == [[1, 1, 1, 1]]
    assert stripped["mm_token_type_ids"].shape == (1, 4)
    assert stripped["pixel_values"].shape == (1, 3)


def test_strip_padding_leaves_decoder_stream_of_seq2seq_whole():
    row = take_rows(seq2seq_batch(), [0])
    stripped, kept = strip_padding(row, token_layout(row))

    assert kept.tolist() == [0, 1, 2]
    assert stripped["input_ids"].tolist() == [[10, 11, 12]]
    assert stripped["decoder_input_ids"].tolist() == [[100, 101, 102, 103]]


def test_strip_padding_takes_one_row():
    batch = decoder_batch()

    with pytest.raises(ValueError, match="one-row batch, got 2 rows"):
        strip_padding(batch, token_layout(batch))


def test_mask_position_ids_start_at_first_real_token():
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])

    assert mask_position_ids(mask).tolist() == [[1, 1, 0, 1, 2], [0, 1, 2, 3, 4]]


def test_split_for_decoding_decoder_only():
    batch = decoder_batch()
    prefill, steps = split_for_decoding(batch, token_layout(batch), prefill=4)

    assert prefill["input_ids"].shape == (2, 4)
    assert prefill["attention_mask"].shape == (2, 4)
    assert "pixel_values" in prefill
    assert len(steps) == 2
    assert steps[0]["input_ids"].tolist() == [[14], [20]]
    assert steps[0]["attention_mask"].shape == (2, 5)
    assert steps[1]["attention_mask"].shape == (2, 6)
    assert steps[0]["mm_token_type_ids"].shape == (2, 1)
    assert "pixel_values" not in steps[0]


def test_split_for_decoding_keeps_patches_whole():
    batch = decoder_batch()
    # As many image patches as tokens: the patches must still go to the prefill whole.
    batch["pixel_values"] = torch.zeros(2, 6, 48)
    prefill, steps = split_for_decoding(batch, token_layout(batch), prefill=4)

    assert prefill["pixel_values"].shape == (2, 6, 48)
    assert "pixel_values" not in steps[0]


def test_split_for_decoding_seq2seq_keeps_encoder_inputs():
    batch = seq2seq_batch()
    prefill, steps = split_for_decoding(batch, token_layout(batch), prefill=3)

    assert prefill["decoder_input_ids"].tolist() == [[100, 101, 102], [104, 105, 106]]
    assert torch.equal(prefill["input_ids"], batch["input_ids"])
    assert torch.equal(steps[0]["attention_mask"], batch["attention_mask"])
    assert steps[0]["decoder_input_ids"].tolist() == [[103], [107]]


@pytest.mark.parametrize("prefill", [0, 6])
def test_split_for_decoding_rejects_prefill_out_of_range(prefill):
    batch = decoder_batch()

    with pytest.raises(ValueError, match=rf"prefill length must lie in \[1, 5\], got {prefill}"):
        split_for_decoding(batch, token_layout(batch), prefill=prefill)


def test_special_token_ids_include_sub_configs():
    config = transformers.Gemma4Config(
        text_config={"vocab_size": 512, "pad_token_id": 0, "bos_token_id": 2, "eos_token_id": [1, 106]},
        image_token_id=500,
        audio_token_id=504,
    )

    special = special_token_ids(config)

    assert {0, 1, 2, 106, 500, 504} <= special


def test_ordinary_positions_skip_special_and_padding():
    batch = decoder_batch()
    batch["input_ids"][1, 3] = 500
    ordinary = ordinary_positions(batch, token_layout(batch), frozenset({500}))

    assert ordinary[0].tolist() == [False, False, True, True, True, True]
    assert ordinary[1].tolist() == [True, True, True, False, True, True]


def test_with_token_copies_the_batch():
    batch = decoder_batch()
    changed = with_token(batch, token_layout(batch), row=1, position=2, token=7)

    assert changed["input_ids"][1, 2] == 7
    assert batch["input_ids"][1, 2] == 18
