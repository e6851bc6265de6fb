"""Deterministic model inputs: token ids with and without padding, pixels, patches, audio frames.

Every builder takes the model's config and an :class:`InputSpec` and returns a
:class:`ModelInputs`. Random values come from a ``torch.Generator`` seeded by the spec, so
the same spec gives bit-identical inputs on every run. Floating inputs are created in
float32; a backend casts them to its dtype.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import torch

Padding = Literal["none", "left", "right", "auto"]


@dataclass(frozen=True)
class InputSpec:
    """Shape and padding of one input batch.

    ``pad_len`` positions of the first row are padding when ``padding`` is not "none"; the
    other rows stay full, so a batch mixes padded and unpadded rows as real batches do.
    "auto" pads on the side users pad a case on: left for decoders, right for encoders
    (see :func:`resolve_padding`).
    """

    name: str = "plain"
    batch_size: int = 2
    seq_len: int = 16
    padding: Padding = "none"
    pad_len: int = 4
    seed: int = 0


PLAIN = InputSpec()
LEFT_PADDED = InputSpec(name="left-padded", padding="left")
RIGHT_PADDED = InputSpec(name="right-padded", padding="right")
PADDED = InputSpec(name="padded", padding="auto")

# Input kinds whose batches carry an attention mask over text, so padding applies to them.
_PADDABLE: set[str] = set()


@dataclass
class ModelInputs:
    """Keyword arguments for a forward, plus which output positions carry real tokens.

    ``valid`` has shape (batch, output positions) and is False where the output belongs to
    a padding token; comparisons skip those positions. None means every position is real.
    """

    tensors: dict[str, torch.Tensor]
    valid: torch.Tensor | None = None
    notes: dict[str, Any] = field(default_factory=dict)

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
        """Return the tensors on ``device``, floating ones cast to ``dtype`` when given.

        Values that are not tensors (a KV cache, ``use_cache``) are passed unchanged.
        """
        moved = {}
        for name, tensor in self.tensors.items():
            if not isinstance(tensor, torch.Tensor):
                moved[name] = tensor
                continue
            if dtype is not None and tensor.is_floating_point():
                tensor = tensor.to(dtype)
            moved[name] = tensor.to(device)
        return moved


InputBuilder = Callable[[Any, InputSpec, Any], ModelInputs]
_BUILDERS: dict[str, InputBuilder] = {}

# First ids of most vocabularies are special tokens (pad, bos, eos, unk); random text avoids them.
_FIRST_ORDINARY_ID = 8

# Short English prompts for checkpoints that ship a tokenizer, so that top-1 agreement is
# measured on text the model has a real opinion about.
PROMPTS = (
    "The capital of France is Paris, and the capital of Italy is",
    "def fibonacci(n):\n    if n < 2:\n        return n\n    return",
    "Water boils at one hundred degrees Celsius at sea level, but on a mountain it",
    "The quick brown fox jumps over the lazy dog while the cat",
)


def register_input_builder(name: str, *, paddable: bool = False) -> Callable[[InputBuilder], InputBuilder]:
    """Register a builder under ``name``, the value a case gives in its ``inputs`` field.

    ``paddable`` says that the builder honours the spec's padding.
    """

    def decorate(builder: InputBuilder) -> InputBuilder:
        _BUILDERS[name] = builder
        if paddable:
            _PADDABLE.add(name)
        return builder

    return decorate


def resolve_padding(spec: InputSpec, kind: str, pads_left: bool) -> InputSpec | None:
    """Return the spec to use for an input kind, or None when padding does not apply to it.

    ``pads_left`` is true for decoder-only models, which generation pads on the left.
    """
    if spec.padding == "none":
        return spec
    if kind not in _PADDABLE:
        return None
    if spec.padding == "auto":
        side = "left" if pads_left else "right"
        return replace(spec, name=f"{side}-padded", padding=side)
    return spec


def input_builder_names() -> list[str]:
    return sorted(_BUILDERS)


def build_inputs(kind: str, config: Any, spec: InputSpec, tokenizer: Any = None) -> ModelInputs:
    """Build the inputs of ``kind`` for a model with ``config``."""
    if kind not in _BUILDERS:
        raise ValueError(f"unknown input kind {kind!r}; known kinds: {', '.join(input_builder_names())}")
    return _BUILDERS[kind](config, spec, tokenizer)


def generator_for(spec: InputSpec, stream: int = 0) -> torch.Generator:
    """Return a generator seeded by the spec; ``stream`` separates independent draws."""
    return torch.Generator().manual_seed(spec.seed * 1_000_003 + stream)


def text_config_of(config: Any) -> Any:
    """Return the sub-config that describes the language model, or the config itself."""
    for name in ("text_config", "language_config", "decoder"):
        sub = getattr(config, name, None)
        if sub is not None and hasattr(sub, "vocab_size"):
            return sub
    return config


def pad_token_id_of(config: Any) -> int:
    pad = getattr(text_config_of(config), "pad_token_id", None)
    if pad is None:
        pad = getattr(config, "pad_token_id", None)
    return int(pad) if isinstance(pad, int) else 0


def padding_mask(spec: InputSpec) -> torch.Tensor:
    """Return the (batch, seq_len) attention mask that ``spec`` asks for."""
    mask = torch.ones(spec.batch_size, spec.seq_len, dtype=torch.long)
    if spec.padding == "left":
        mask[0, : spec.pad_len] = 0
    elif spec.padding == "right":
        mask[0, spec.seq_len - spec.pad_len :] = 0
    return mask


def random_token_ids(vocab_size: int, spec: InputSpec, stream: int = 0, low: int = _FIRST_ORDINARY_ID) -> torch.Tensor:
    """Draw (batch, seq_len) token ids in [low, vocab_size)."""
    if vocab_size <= low + 1:
        low = 0
    return torch.randint(low, vocab_size, (spec.batch_size, spec.seq_len), generator=generator_for(spec, stream))


def tokenized_prompts(tokenizer: Any, spec: InputSpec) -> torch.Tensor:
    """Tokenize the fixed prompts to exactly (batch, seq_len) ids, cycling prompts and tokens."""
    rows = []
    for row in range(spec.batch_size):
        ids = tokenizer(PROMPTS[row % len(PROMPTS)], add_special_tokens=True)["input_ids"]
        while len(ids) < spec.seq_len:
            ids = ids + ids
        rows.append(ids[: spec.seq_len])
    return torch.tensor(rows, dtype=torch.long)


def apply_padding(input_ids: torch.Tensor, spec: InputSpec, pad_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Overwrite padded positions with the pad token; return the ids and the attention mask."""
    mask = padding_mask(spec)
    padded = input_ids.masked_fill(mask == 0, pad_token_id)
    return padded, mask


def text_ids(config: Any, spec: InputSpec, tokenizer: Any = None, stream: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Return padded input ids and attention mask, from the tokenizer's prompts when one is given."""
    if tokenizer is not None:
        ids = tokenized_prompts(tokenizer, spec)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else pad_token_id_of(config)
    else:
        ids = random_token_ids(text_config_of(config).vocab_size, spec, stream)
        pad = pad_token_id_of(config)
    return apply_padding(ids, spec, pad)


@register_input_builder("text", paddable=True)
def text_inputs(config: Any, spec: InputSpec, tokenizer: Any = None) -> ModelInputs:
    """Token ids and attention mask for decoders and encoders."""
    ids, mask = text_ids(config, spec, tokenizer)
    return ModelInputs({"input_ids": ids, "attention_mask": mask}, valid=mask.bool())


def decoder_ids(config: Any, spec: InputSpec, length: int) -> torch.Tensor:
    """Return decoder ids that start with the decoder start token, then random tokens."""
    start = getattr(config, "decoder_start_token_id", None)
    if start is None:
        start = pad_token_id_of(config)
    short = replace(spec, seq_len=length)
    ids = random_token_ids(text_config_of(config).vocab_size, short, stream=7)
    ids[:, 0] = int(start)
    return ids


@register_input_builder("seq2seq-text", paddable=True)
def seq2seq_text_inputs(config: Any, spec: InputSpec, tokenizer: Any = None) -> ModelInputs:
    """Encoder ids with padding, and unpadded decoder ids half as long."""
    ids, mask = text_ids(config, spec, tokenizer)
    decoder = decoder_ids(config, spec, max(2, spec.seq_len // 2))
    return ModelInputs({"input_ids": ids, "attention_mask": mask, "decoder_input_ids": decoder})


@register_input_builder("speech-seq2seq")
def speech_seq2seq_inputs(config: Any, spec: InputSpec, tokenizer: Any = None) -> ModelInputs:
    """Log-mel features shaped (batch, mel bins, 2 x max_source_positions), and decoder ids.

    Whisper's encoder halves the frame count with a strided convolution and requires
    exactly 2 x ``max_source_positions`` frames, so the spec's length does not apply to it.
    """
    frames = 2 * config.max_source_positions
    features = torch.randn(spec.batch_size, config.num_mel_bins, frames, generator=generator_for(spec, 1))
    decoder = decoder_ids(config, spec, max(2, spec.seq_len // 2))
    return ModelInputs({"input_features": features, "decoder_input_ids": decoder})


def image_size_of(config: Any) -> tuple[int, int]:
    """Return (height, width) from a config's ``image_size``, an int or a pair."""
    size = getattr(config, "image_size", 32)
    if isinstance(size, (list, tuple)):
        return int(size[0]), int(size[-1])
    return int(size), int(size)


@register_input_builder("image")
def image_inputs(config: Any, spec: InputSpec, tokenizer: Any = None) -> ModelInputs:
    """Pixel values (batch, channels, height, width), standard normal like normalized images."""
    vision = getattr(config, "vision_config", None) or config
    height, width = image_size_of(vision)
    channels = int(getattr(vision, "num_channels", 3))
    pixels = torch.randn(spec.batch_size, channels, height, width, generator=generator_for(spec, 2))
    return ModelInputs({"pixel_values": pixels})
