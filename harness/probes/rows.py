"""Edit a batch of model inputs by row and by position: take rows, strip padding, swap a token.

The consistency probes see a batch as rows of a *token stream*: ``decoder_input_ids`` for
encoder-decoder models, else ``input_ids``. The attention mask covers ``input_ids``, which
for an encoder-decoder model is the encoder's input. A tensor is *aligned* with a key when
its name is one of TOKEN_KEYS and its first two dimensions are that key's (batch, length).
A tensor is *per row* when its first dimension is the batch size. Any other value is
passed unchanged.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

MASK = "attention_mask"
# Inputs that hold one value per token; ``decoder_``-prefixed twins follow a decoder stream.
TOKEN_KEYS = ("input_ids", MASK, "token_type_ids", "position_ids", "mm_token_type_ids")


@dataclass(frozen=True)
class TokenLayout:
    """The keys of a batch that contain its tokens.

    ``stream`` is the key whose positions the model's outputs follow. ``masked`` is the
    key the attention mask covers, or None when the batch has no attention mask.
    """

    stream: str
    masked: str | None
    encoder_decoder: bool

    @property
    def padding_moves_outputs(self) -> bool:
        """Return whether output positions follow the padded tokens (false for encoder-decoder models)."""
        return self.masked == self.stream


def token_layout(tensors: dict[str, Any]) -> TokenLayout | None:
    """Return the layout of a batch, or None when it has no token ids (image or audio only)."""
    encoder_decoder = "decoder_input_ids" in tensors
    stream = "decoder_input_ids" if encoder_decoder else "input_ids"
    if stream not in tensors:
        return None
    masked = "input_ids" if MASK in tensors and "input_ids" in tensors else None
    return TokenLayout(stream=stream, masked=masked, encoder_decoder=encoder_decoder)


def batch_size_of(tensors: dict[str, Any]) -> int:
    for value in tensors.values():
        if isinstance(value, torch.Tensor) and value.dim() >= 1:
            return int(value.shape[0])
    raise ValueError(f"no tensor with a batch dimension among inputs {sorted(tensors)}")


def is_aligned(tensor: Any, reference: torch.Tensor) -> bool:
    """Return whether ``tensor``'s first two dimensions are ``reference``'s (batch, length)."""
    return isinstance(tensor, torch.Tensor) and tensor.dim() >= 2 and tensor.shape[:2] == reference.shape[:2]


def take_rows(tensors: dict[str, Any], rows: Sequence[int]) -> dict[str, Any]:
    """Return the batch made of ``rows``, in that order."""
    batch = batch_size_of(tensors)
    index = torch.tensor(list(rows), dtype=torch.long)
    taken = {}
    for name, value in tensors.items():
        if isinstance(value, torch.Tensor) and value.dim() >= 1 and value.shape[0] == batch:
            taken[name] = value.index_select(0, index.to(value.device))
        else:
            taken[name] = value
    return taken


def replace_rows(tensors: dict[str, Any], donor: dict[str, Any], rows: Iterable[int]) -> dict[str, Any]:
    """Return ``tensors`` with ``rows`` copied from ``donor``, a batch of the same shapes."""
    rows = list(rows)
    batch = batch_size_of(tensors)
    replaced = {}
    for name, value in tensors.items():
        other = donor.get(name)
        if isinstance(value, torch.Tensor) and value.dim() >= 1 and value.shape[0] == batch:
            if not isinstance(other, torch.Tensor) or other.shape != value.shape:
                raise ValueError(f"cannot copy rows of {name!r}: shapes {tuple(value.shape)} and {_shape(other)}")
            value = value.clone()
            value[rows] = other[rows]
        replaced[name] = value
    return replaced


def _shape(value: Any) -> Any:
    return tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__


def following(tensors: dict[str, Any], layout: TokenLayout, key: str) -> set[str]:
    """Return the names of the tensors that hold one value per position of ``key``.

    Names decide, not shapes: a per-row tensor such as 16 image patches lines up with a
    16-token row by accident. In an encoder-decoder batch, the ``decoder_`` names follow the
    decoder stream and the plain names follow the encoder input.
    """
    prefix = "decoder_" if layout.encoder_decoder and key == layout.stream else ""
    reference = tensors[key]
    return {
        name
        for name in (prefix + token_key for token_key in TOKEN_KEYS)
        if name in tensors and is_aligned(tensors[name], reference)
    }


def strip_padding(tensors: dict[str, Any], layout: TokenLayout) -> tuple[dict[str, Any], torch.Tensor]:
    """Drop the padding positions of a one-row batch; return the batch and the kept positions."""
    if batch_size_of(tensors) != 1:
        raise ValueError(f"strip_padding takes a one-row batch, got {batch_size_of(tensors)} rows")
    if layout.masked is None:
        return dict(tensors), torch.arange(tensors[layout.stream].shape[1])
    kept = torch.nonzero(tensors[MASK][0] != 0).flatten()
    aligned = following(tensors, layout, layout.masked)
    stripped = {}
    for name, value in tensors.items():
        stripped[name] = value.index_select(1, kept.to(value.device)) if name in aligned else value
    return stripped, kept


def mask_position_ids(mask: torch.Tensor) -> torch.Tensor:
    """Return position ids counted over real tokens, as ``generate`` derives them from the mask.

    A left-padded row's first real token gets position 0, as it would without padding.
    Padding positions get 1, the value ``generate`` writes there; their outputs are never compared.
    """
    positions = mask.long().cumsum(-1) - 1
    return positions.masked_fill(mask == 0, 1)


def accepts_position_ids(module: torch.nn.Module, layout: TokenLayout) -> bool:
    """Return whether the model's forward takes position ids for its token stream."""
    if layout.encoder_decoder:
        return False
    return "position_ids" in inspect.signature(module.forward).parameters


def with_mask_positions(tensors: dict[str, Any], layout: TokenLayout, enabled: bool) -> dict[str, Any]:
    """Add position ids derived from the attention mask when ``enabled`` and the batch has a mask."""
    if not enabled or layout.masked is None or "position_ids" in tensors:
        return dict(tensors)
    return {**tensors, "position_ids": mask_position_ids(tensors[MASK])}


def special_token_ids(config: Any) -> frozenset[int]:
    """Collect every id a config names as a special token (``*_token_id``, ``*_token_index``), sub-configs included."""
    found: set[int] = set()

    def visit(values: dict[str, Any]) -> None:
        for name, value in values.items():
            if isinstance(value, dict):
                visit(value)
            elif isinstance(name, str) and name.endswith(("_token_id", "_token_index", "_token_ids")):
                items = value if isinstance(value, (list, tuple)) else [value]
                found.update(item for item in items if isinstance(item, int) and not isinstance(item, bool))

    visit(config.to_dict())
    return frozenset(found)


def ordinary_positions(tensors: dict[str, Any], layout: TokenLayout, special: frozenset[int]) -> torch.Tensor:
    """Return a (batch, length) mask of stream positions that hold a real, non-special token.

    Only these positions may be perturbed or decoded one at a time: a special token (an
    image placeholder, BOS) carries meaning that a plain text token does not.
    """
    ids = tensors[layout.stream]
    ordinary = torch.ones_like(ids, dtype=torch.bool)
    for token in special:
        ordinary &= ids != token
    if layout.masked == layout.stream:
        ordinary &= tensors[MASK] != 0
    return ordinary


def with_token(tensors: dict[str, Any], layout: TokenLayout, row: int, position: int, token: int) -> dict[str, Any]:
    """Return a copy of the batch with the stream token at (row, position) replaced."""
    ids = tensors[layout.stream].clone()
    ids[row, position] = token
    return {**tensors, layout.stream: ids}


def split_for_decoding(
    tensors: dict[str, Any], layout: TokenLayout, prefill: int
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Split a batch into a prefill of ``prefill`` stream positions and one input per later position.

    A decode step carries the stream-aligned tensors at its position and, for a
    decoder-only model, the attention mask up to and including it. A decoder-only model
    gets nothing else, because pixels and other per-row inputs belong to the prefill. An
    encoder-decoder model gets its encoder inputs again at every step.
    """
    length = tensors[layout.stream].shape[1]
    if not 0 < prefill < length:
        raise ValueError(f"prefill length must lie in [1, {length - 1}], got {prefill}")
    aligned = following(tensors, layout, layout.stream)

    prefill_inputs = {name: value[:, :prefill] if name in aligned else value for name, value in tensors.items()}
    steps = []
    for position in range(prefill, length):
        step: dict[str, Any] = {}
        for name, value in tensors.items():
            if name == MASK and name in aligned:
                step[name] = value[:, : position + 1]
            elif name in aligned:
                step[name] = value[:, position : position + 1]
            elif layout.encoder_decoder:
                step[name] = value
        steps.append(step)
    return prefill_inputs, steps
