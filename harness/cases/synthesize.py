"""Synthesize inputs for any model from its forward signature and its config.

Each forward parameter the harness recognizes by name (token ids, masks, pixels, audio features
and waveforms, boxes, Q-Former ids, decoder ids) has a builder that reads its sizes from the
config. Inputs are tried from the richest set to the plainest (every modality the forward
accepts, then text alone, then each modality alone) on a tiny fp32 copy of the model, and
the first set that runs is kept; the result's notes say which set it is and why richer ones
were dropped. Image placeholders are counted by running the model's own
``get_image_features``, so the count follows the processor-free path the model checks.
"""

from __future__ import annotations

import inspect
import itertools
import logging
from dataclasses import dataclass, replace
from typing import Any

import torch
import transformers

from harness.inputs import InputSpec, ModelInputs, generator_for, padding_mask, register_input_builder

log = logging.getLogger(__name__)

# Audio lengths: a quarter second of 16 kHz samples for waveform models.
_WAVEFORM_SAMPLES = 4000
_FIRST_ORDINARY_ID = 8
_BYTE_VOCAB = 256


class InputsUnavailable(Exception):
    """No synthesized input set runs the model's forward; the message lists what each attempt raised."""


def model_class(config: Any) -> type:
    """Return the model class a saved config names in ``architectures``."""
    names = getattr(config, "architectures", None) or []
    for name in names:
        cls = getattr(transformers, name, None)
        if cls is not None:
            return cls
    raise InputsUnavailable(f"config of {config.model_type!r} names no model class in 'architectures': {names!r}")


def forward_parameters(cls: type) -> tuple[set[str], set[str]]:
    """Return the forward's parameter names and the ones without a default."""
    signature = inspect.signature(cls.forward)
    names, required = set(), set()
    for name, parameter in signature.parameters.items():
        if name == "self" or parameter.kind in (parameter.VAR_KEYWORD, parameter.VAR_POSITIONAL):
            continue
        names.add(name)
        if parameter.default is inspect.Parameter.empty:
            required.add(name)
    return names, required


def sub_config(config: Any, *names: str) -> Any:
    for name in names:
        value = getattr(config, name, None)
        if value is not None and hasattr(value, "to_dict"):
            return value
    return None


def text_config(config: Any) -> Any:
    try:
        text = config.get_text_config(decoder=True)
    except (AttributeError, TypeError, ValueError):
        text = None
    return text if text is not None and getattr(text, "vocab_size", None) else config


def special_ids(config: Any) -> set[int]:
    """Return every token id a config names (``*_token_id``, ``*_token_index``), in every sub-config."""
    found: set[int] = set()

    def visit(node: dict[str, Any]) -> None:
        for key, value in node.items():
            if isinstance(value, dict):
                visit(value)
            elif isinstance(key, str) and key.endswith(("_token_id", "_token_index", "token_ids")):
                values = value if isinstance(value, list) else [value]
                found.update(item for item in values if isinstance(item, int) and not isinstance(item, bool))

    visit(config.to_dict())
    return found


def ordinary_ids(
    config: Any, shape: tuple[int, ...], spec: InputSpec, stream: int, vocab: int | None = None
) -> torch.Tensor:
    """Draw token ids that are no special token of the config."""
    # Byte- and character-level models (CANINE, Bark's sub-models) name no vocab_size; ids
    # below 256 are valid for them.
    vocab = vocab or int(getattr(text_config(config), "vocab_size", None) or _BYTE_VOCAB)
    reserved = special_ids(config)
    allowed = torch.tensor([i for i in range(min(_FIRST_ORDINARY_ID, vocab - 1), vocab) if i not in reserved])
    if allowed.numel() == 0:
        allowed = torch.arange(vocab)
    picks = torch.randint(0, allowed.numel(), shape, generator=generator_for(spec, stream))
    return allowed[picks]


def image_shape(config: Any) -> tuple[int, int, int]:
    """Return (channels, height, width) of the images a config's vision part takes (32 x 32 when it names no size)."""
    vision = sub_config(config, "vision_config", "backbone_config", "image_config") or config
    size = getattr(vision, "image_size", None) or getattr(config, "image_size", None) or 32
    if isinstance(size, dict):
        size = [size.get("height", 32), size.get("width", 32)]
    height, width = (size[0], size[-1]) if isinstance(size, (list, tuple)) else (size, size)
    channels = getattr(vision, "num_channels", None) or getattr(config, "num_channels", 3)
    return int(channels), int(height), int(width)


def image_token_id(config: Any) -> int | None:
    for name in ("image_token_id", "image_token_index"):
        value = getattr(config, name, None)
        if isinstance(value, int):
            return value
    return None


@dataclass
class Attempt:
    groups: tuple[str, ...]
    error: str = ""


def candidate_groups(parameters: set[str], config: Any) -> list[tuple[str, ...]]:
    """Return input group sets to try, richest first.

    Audio comes in two layouts each: waveforms as (batch, samples) or (batch, channels,
    samples), features as (batch, bins, frames) or (batch, frames, bins).
    """
    text = "input_ids" in parameters
    modalities: list[tuple[str, ...]] = []
    if "image_grid_thw" in parameters:
        modalities.append(("image-grid", "image"))
    elif "grid_thw" in parameters:
        # Vision towers of Qwen2-VL-style models take patches (as hidden_states or
        # pixel_values) and their grid.
        modalities.append(("image-grid",))
    elif "pixel_values" in parameters:
        modalities.append(("image", "video"))
    if "pixel_values_videos" in parameters and "video_grid_thw" not in parameters:
        modalities.append(("video",))
    if "past_values" in parameters:
        modalities.append(("series",))
    if "input_values" in parameters:
        modalities.append(("waveform", "waveform-channels"))
    if "input_features" in parameters:
        modalities.append(("features", "features-time-major"))
    candidates: list[tuple[str, ...]] = []
    if text and modalities:
        candidates += [("text", *choice) for choice in itertools.product(*modalities)]
    if text:
        candidates.append(("text",))
    if modalities:
        candidates += list(itertools.product(*modalities))
        if len(modalities) > 1:
            candidates += [(layout,) for layouts in modalities for layout in layouts]
    return candidates or [("text",)]


class Synthesizer:
    """Builds inputs for one model class and config."""

    def __init__(self, config: Any, spec: InputSpec, model: torch.nn.Module | None = None) -> None:
        self.config = config
        self.spec = spec
        self.cls = model_class(config)
        self.parameters, self.required = forward_parameters(self.cls)
        self._model = model

    @property
    def model(self) -> torch.nn.Module:
        if self._model is None:
            self._model = _probe_model(self.cls, self.config)
        return self._model

    def build(self) -> ModelInputs:
        attempts: list[Attempt] = []
        for groups in candidate_groups(self.parameters, self.config):
            try:
                inputs = self.inputs_for(groups)
                with torch.inference_mode():
                    self.model(**inputs.tensors)
            except Exception as error:  # noqa: BLE001 - every failure is recorded and the next set tried
                attempts.append(Attempt(groups, f"{type(error).__name__}: {_first_line(error)}"))
                continue
            inputs.notes["input_groups"] = "+".join(groups)
            if attempts:
                inputs.notes["dropped"] = "; ".join(f"{'+'.join(a.groups)}: {a.error}" for a in attempts)
            return inputs
        tried = "; ".join(f"{'+'.join(a.groups)}: {a.error}" for a in attempts)
        raise InputsUnavailable(f"no synthesized inputs run {self.cls.__name__}.forward ({tried})")

    def inputs_for(self, groups: tuple[str, ...]) -> ModelInputs:
        tensors: dict[str, torch.Tensor] = {}
        valid = None
        if "image" in groups:
            tensors.update(self.image_tensors())
        if "image-grid" in groups:
            tensors.update(self.image_grid_tensors())
        if "video" in groups:
            tensors.update(self.video_tensors())
        if "series" in groups:
            tensors.update(self.series_tensors())
        if "waveform" in groups or "waveform-channels" in groups:
            tensors["input_values"] = self.waveform(channels="waveform-channels" in groups)
        if "features" in groups or "features-time-major" in groups:
            tensors.update(self.audio_features(time_major="features-time-major" in groups))
        if "text" in groups:
            image_tokens = self.image_token_count(tensors) if {"image", "image-grid"} & set(groups) else 0
            ids, mask = self.text_tensors(image_tokens)
            tensors["input_ids"] = ids
            if "attention_mask" in self.parameters:
                tensors["attention_mask"] = mask
                if "decoder_input_ids" not in self.parameters:
                    valid = mask.bool()
            tensors.update(self.text_extras(ids))
            token = image_token_id(self.config)
            if image_tokens and token is not None and "mm_token_type_ids" in self.parameters:
                # Processors mark image placeholders with 1 and text with 0.
                tensors["mm_token_type_ids"] = (ids == token).long()
        if "decoder_input_ids" in self.parameters:
            tensors["decoder_input_ids"] = self.decoder_ids()
        missing = self.required - set(tensors)
        if missing:
            raise InputsUnavailable(f"forward requires {sorted(missing)}, which the harness cannot synthesize")
        return ModelInputs(tensors, valid=valid)

    def text_tensors(self, image_tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
        spec = self.spec
        ids = ordinary_ids(self.config, (spec.batch_size, spec.seq_len), spec, stream=0)
        mask = padding_mask(spec)
        token = image_token_id(self.config)
        if image_tokens and token is not None:
            # Placeholders go after the longest padding, so padding never hides one.
            prefix = min(spec.pad_len + 1, spec.seq_len)
            placeholders = torch.full((spec.batch_size, image_tokens), token, dtype=torch.long)
            ids = torch.cat([ids[:, :prefix], placeholders, ids[:, prefix:]], dim=1)
            mask = torch.cat([mask[:, :prefix], torch.ones_like(placeholders), mask[:, prefix:]], dim=1)
        pad = getattr(text_config(self.config), "pad_token_id", None)
        ids = ids.masked_fill(mask == 0, pad if isinstance(pad, int) else 0)
        return ids, mask

    def text_extras(self, ids: torch.Tensor) -> dict[str, torch.Tensor]:
        extras: dict[str, torch.Tensor] = {}
        if "token_type_ids" in self.required:
            extras["token_type_ids"] = torch.zeros_like(ids)
        if "bbox" in self.parameters:
            extras["bbox"] = self.boxes(ids.shape)
        if "qformer_input_ids" in self.parameters:
            qformer = sub_config(self.config, "qformer_config")
            vocab = getattr(qformer, "vocab_size", None) or 512
            extras["qformer_input_ids"] = ordinary_ids(self.config, tuple(ids.shape), self.spec, stream=5, vocab=vocab)
            extras["qformer_attention_mask"] = torch.ones_like(ids)
        return extras

    def boxes(self, shape: torch.Size) -> torch.Tensor:
        """Draw (batch, seq, 4) boxes x0 <= x1, y0 <= y1 on the 0-1000 grid layout models use."""
        corners = torch.randint(0, 1001, (*shape, 2, 2), generator=generator_for(self.spec, 6))
        low, high = corners.min(dim=-2).values, corners.max(dim=-2).values
        return torch.cat([low, high], dim=-1)

    def decoder_ids(self) -> torch.Tensor:
        text = text_config(self.config)
        length = max(2, self.spec.seq_len // 2)
        ids = ordinary_ids(self.config, (self.spec.batch_size, length), self.spec, stream=7)
        start = getattr(self.config, "decoder_start_token_id", None)
        if start is None:
            start = getattr(text, "decoder_start_token_id", None)
        if start is None:
            start = getattr(text, "pad_token_id", None)
        ids[:, 0] = int(start) if isinstance(start, int) else 0
        return ids

    def image_tensors(self) -> dict[str, torch.Tensor]:
        channels, height, width = image_shape(self.config)
        pixels = torch.randn(self.spec.batch_size, channels, height, width, generator=generator_for(self.spec, 2))
        return {"pixel_values": pixels}

    def video_tensors(self) -> dict[str, torch.Tensor]:
        """Draw (batch, frames, channels, height, width) clips of the config's frame count (2 when it names none)."""
        vision = sub_config(self.config, "vision_config") or self.config
        frames = int(getattr(vision, "num_frames", None) or getattr(self.config, "num_frames", None) or 2)
        channels, height, width = image_shape(self.config)
        shape = (self.spec.batch_size, frames, channels, height, width)
        name = "pixel_values_videos" if "pixel_values_videos" in self.parameters else "pixel_values"
        return {name: torch.randn(*shape, generator=generator_for(self.spec, 8))}

    def series_tensors(self) -> dict[str, torch.Tensor]:
        """Draw a (batch, context length, channels) time series, the layout of PatchTST-style models."""
        length = int(getattr(self.config, "context_length", None) or 32)
        channels = getattr(self.config, "num_input_channels", None) or getattr(self.config, "input_size", None)
        channels = int(channels or 1)
        values = torch.randn(self.spec.batch_size, length, channels, generator=generator_for(self.spec, 9))
        return {"past_values": values}

    def image_grid_tensors(self) -> dict[str, torch.Tensor]:
        """Flattened patches and their (temporal, height, width) grid, as Qwen2-VL-style processors lay them out.

        Each image is a 2 x 2 grid of merged patches: (2 x merge)^2 patches of
        channels x temporal patch x patch^2 values.
        """
        vision = sub_config(self.config, "vision_config") or self.config
        patch = int(getattr(vision, "patch_size", 8))
        temporal = int(getattr(vision, "temporal_patch_size", None) or 1)
        merge = int(getattr(vision, "spatial_merge_size", None) or 1)
        channels = int(getattr(vision, "in_channels", None) or getattr(vision, "num_channels", None) or 3)
        side = 2 * merge
        count = self.spec.batch_size * side * side
        patches = torch.randn(count, channels * temporal * patch * patch, generator=generator_for(self.spec, 2))
        grid = torch.tensor([[1, side, side]] * self.spec.batch_size)
        if "image_grid_thw" in self.parameters:
            return {"pixel_values": patches, "image_grid_thw": grid}
        if "hidden_states" in self.parameters:
            return {"hidden_states": patches, "grid_thw": grid}
        return {"pixel_values": patches, "grid_thw": grid}

    def image_token_count(self, image_tensors: dict[str, torch.Tensor]) -> int:
        """Return the placeholders one image fills, from the numel of the model's projected image features."""
        if image_token_id(self.config) is None:
            return 0
        base = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
        owner = next((m for m in (self.model, base) if hasattr(m, "get_image_features")), None)
        if owner is None:
            return 0
        with torch.inference_mode():
            features = owner.get_image_features(**image_tensors)
        features = getattr(features, "pooler_output", features)
        tensors = list(features) if isinstance(features, (list, tuple)) else [features]
        numel = sum(tensor.numel() for tensor in tensors if isinstance(tensor, torch.Tensor))
        width = self.model.get_input_embeddings().embedding_dim
        return numel // (width * self.spec.batch_size)

    def waveform(self, channels: bool) -> torch.Tensor:
        """Draw a quarter second of 16 kHz noise, as (batch, samples) or (batch, channels, samples)."""
        count = getattr(self.config, "audio_channels", None) or 1
        shape = (
            (self.spec.batch_size, count, _WAVEFORM_SAMPLES) if channels else (self.spec.batch_size, _WAVEFORM_SAMPLES)
        )
        return torch.randn(*shape, generator=generator_for(self.spec, 3))

    def audio_features(self, time_major: bool) -> dict[str, torch.Tensor]:
        """Draw log-mel-like features: (batch, bins, frames), or (batch, frames, bins) when ``time_major``."""
        audio = sub_config(self.config, "audio_config", "encoder_config") or self.config
        bins = (
            getattr(audio, "num_mel_bins", None)
            or getattr(audio, "feature_size", None)
            or getattr(audio, "input_feat_per_channel", None)
            or 80
        )
        positions = getattr(audio, "max_source_positions", None)
        frames = 2 * positions if isinstance(positions, int) else 64
        generator = generator_for(self.spec, 4)
        features = torch.randn(self.spec.batch_size, int(bins), frames, generator=generator)
        if time_major:
            features = features.transpose(1, 2).contiguous()
        return {"input_features": features}


# The last probe model, keyed by its class and config: the inputs of one case are built for
# several specs (plain, padded) in a row, and each would otherwise rebuild the model.
_PROBE: dict[str, torch.nn.Module] = {}


def _probe_model(cls: type, config: Any) -> torch.nn.Module:
    key = f"{cls.__name__}:{config.to_json_string()}"
    if key not in _PROBE:
        _PROBE.clear()
        transformers.set_seed(0)
        _PROBE[key] = cls._from_config(config, dtype=torch.float32).eval()
    return _PROBE[key]


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:300] if text else type(error).__name__


def synthesize(config: Any, spec: InputSpec, model: torch.nn.Module | None = None) -> ModelInputs:
    """Return inputs that run ``config``'s model class, built from its forward signature."""
    return Synthesizer(config, spec, model).build()


@register_input_builder("synthesized", paddable=True)
def synthesized_inputs(config: Any, spec: InputSpec, tokenizer: Any = None) -> ModelInputs:
    """Inputs synthesized from the forward signature, for models whose forward takes an attention mask."""
    return synthesize(config, spec)


@register_input_builder("synthesized-unpadded")
def synthesized_unpadded_inputs(config: Any, spec: InputSpec, tokenizer: Any = None) -> ModelInputs:
    """Inputs synthesized from the forward signature, for models without an attention mask over text."""
    return synthesize(config, replace(spec, padding="none"))
