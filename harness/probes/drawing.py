"""Inputs for the consistency probes, drawn by Hypothesis, and the search for a failing one.

An :class:`Example` is everything one probe run draws: batch size, sequence length,
padding side and amount, the input seed, and the probe's own choices (the row, the
swapped position and token, the decode steps). Bounds come from an :class:`InputSpace`,
which tries the case's input builder on candidate shapes. Multimodal layouts (a text
prefix, image placeholders) are therefore respected without being described here.

:func:`explore` runs a probe on drawn examples under the active profile (see
``harness.probes.profiles``). When one fails, Hypothesis shrinks it to a minimal example,
which the check's message and metrics carry.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import hypothesis
import torch
from hypothesis import strategies as st
from hypothesis.database import DirectoryBasedExampleDatabase

from harness.inputs import InputSpec, ModelInputs, build_inputs, resolve_padding, text_config_of
from harness.probes.consistency import ProbedModel, ProbeOutcome, real_positions
from harness.probes.profiles import active_profile
from harness.probes.rows import TokenLayout, ordinary_positions, token_layout

log = logging.getLogger(__name__)

# Bounds that keep one example to a few milliseconds on the tiny cases.
MAX_BATCH = 4
LENGTH_SPAN = 10
MAX_PAD = 8
MAX_DECODE_STEPS = 4
MAX_NEW_TOKENS = 6
# Sliding windows up to this length are probed past; a longer one would make every example long.
MAX_PROBED_WINDOW = 32
# Input length used for inputs without a token stream (images), whose length is fixed by the config.
_FIXED_LENGTH = 16
# The maximum length tried when searching for the minimum length a builder accepts.
_LONGEST_TRIED = 64


@dataclass(frozen=True)
class Example:
    """The values drawn for one probe run; fields a probe does not draw stay None."""

    batch_size: int
    seq_len: int
    padding: str = "none"
    pad_len: int = 0
    seed: int = 0
    row: int | None = None
    position: int | None = None
    token: int | None = None
    decode_steps: int | None = None
    new_tokens: int | None = None
    draft_tokens: int | None = None

    def spec(self) -> InputSpec:
        return InputSpec(
            name="drawn",
            batch_size=self.batch_size,
            seq_len=self.seq_len,
            padding=self.padding,  # type: ignore[arg-type]
            pad_len=self.pad_len,
            seed=self.seed,
        )

    def as_dict(self) -> dict[str, Any]:
        values = {item.name: getattr(self, item.name) for item in fields(self)}
        if self.padding == "none":
            values.pop("pad_len")
        return {name: value for name, value in values.items() if value is not None}

    def describe(self) -> str:
        return ", ".join(f"{name}={value}" for name, value in self.as_dict().items())


def sliding_window_of(config: Any) -> int | None:
    """Return the sliding window of a model whose layers use one, else None."""
    text = text_config_of(config)
    window = getattr(text, "sliding_window", None)
    layer_types = getattr(text, "layer_types", None) or []
    uses_window = "sliding_attention" in layer_types or bool(getattr(text, "use_sliding_window", False))
    return int(window) if window and uses_window else None


class InputSpace:
    """The batch shapes and paddings a case's input builder accepts, found by trying them."""

    def __init__(self, kind: str, config: Any, tokenizer: Any, sides: tuple[str, ...]) -> None:
        self.kind = kind
        self.config = config
        self.tokenizer = tokenizer
        paddable = resolve_padding(InputSpec(padding="left"), kind, pads_left=True) is not None
        self.sides = sides if paddable else ()
        self.has_stream = token_layout(self.build(InputSpec(seq_len=_FIXED_LENGTH)).tensors) is not None
        self.min_length = self._shortest_length() if self.has_stream else _FIXED_LENGTH
        self.window = sliding_window_of(config)
        self._max_pads: dict[tuple[str, int], int] = {}

    def build(self, spec: InputSpec) -> ModelInputs:
        return build_inputs(self.kind, self.config, spec, self.tokenizer)

    def builds(self, spec: InputSpec) -> bool:
        try:
            self.build(spec)
        except ValueError:
            return False
        return True

    def _shortest_length(self) -> int:
        for length in range(2, _LONGEST_TRIED + 1):
            if self.builds(InputSpec(batch_size=1, seq_len=length)):
                return length
        raise ValueError(f"input kind {self.kind!r} builds no batch of length 2 to {_LONGEST_TRIED}")

    def lengths(self, *, past_window: bool = False) -> tuple[int, int]:
        """Return the (min, max) sequence length to draw; ``past_window`` starts beyond the sliding window."""
        if not self.has_stream:
            return _FIXED_LENGTH, _FIXED_LENGTH
        low = self.min_length
        if past_window and self.window is not None and self.window <= MAX_PROBED_WINDOW:
            low = max(low, self.window + 2)
        return low, low + LENGTH_SPAN

    def max_pad(self, side: str, length: int) -> int:
        """Return the most padding positions the builder accepts on ``side`` at ``length``, 0 for none."""
        key = (side, length)
        if key not in self._max_pads:
            self._max_pads[key] = 0
            for pad in range(min(MAX_PAD, length - 1), 0, -1):
                if self.builds(InputSpec(batch_size=1, seq_len=length, padding=side, pad_len=pad)):  # type: ignore[arg-type]
                    self._max_pads[key] = pad
                    break
        return self._max_pads[key]


@st.composite
def batches(
    draw: Any,
    space: InputSpace,
    *,
    batch: tuple[int, int] = (1, 3),
    sides: tuple[str, ...] = ("none",),
    past_window: bool = False,
) -> Example:
    """Draw a batch shape and padding: ``sides`` lists the allowed paddings, "none" included or not.

    Padding goes on row 0, as the input builders place it.
    """
    low, high = space.lengths(past_window=past_window)
    length = draw(st.integers(low, high), label="seq_len")
    allowed = [side for side in sides if side == "none" or (side in space.sides and space.max_pad(side, length) > 0)]
    hypothesis.assume(allowed)
    padding = draw(st.sampled_from(allowed), label="padding")
    pad = draw(st.integers(1, space.max_pad(padding, length)), label="pad_len") if padding != "none" else 0
    size = draw(st.integers(*batch), label="batch_size")
    seed = draw(st.integers(0, 2**16), label="seed")
    return Example(batch_size=size, seq_len=length, padding=padding, pad_len=pad, seed=seed)


def ordinary_ids(model: ProbedModel) -> list[int]:
    """Return the token ids a swap may use: every id that is not special, past the reserved first ids."""
    if model.vocab_size is None:
        return []
    low = 8 if model.vocab_size > 16 else 0
    return [token for token in range(low, model.vocab_size) if token not in model.special_ids]


@st.composite
def causality_examples(draw: Any, space: InputSpace, model: ProbedModel, sides: tuple[str, ...]) -> Example:
    """Draw a batch, a row, a position past the first real token, and the token to put there."""
    example = draw(batches(space, sides=sides))
    tensors = space.build(example.spec()).tensors
    layout = token_layout(tensors)
    assert layout is not None
    ordinary = ordinary_positions(tensors, layout, model.special_ids)
    # A swap must have a real position before it whose output it could disturb.
    real = real_positions(tensors, layout)
    has_real_before = torch.cumsum(real.long(), dim=1) - real.long() > 0
    ordinary &= has_real_before
    rows = [row for row in range(example.batch_size) if ordinary[row].any()]
    hypothesis.assume(rows)
    row = draw(st.sampled_from(rows), label="row")
    position = draw(st.sampled_from(ordinary[row].nonzero().flatten().tolist()), label="position")

    candidates = ordinary_ids(model)
    hypothesis.assume(len(candidates) >= 2)
    index = draw(st.integers(0, len(candidates) - 2), label="token_index")
    token = candidates[index]
    if token == int(tensors[layout.stream][row, position]):
        token = candidates[-1]
    return replace(example, row=row, position=position, token=token)


@st.composite
def batch_examples(draw: Any, space: InputSpace) -> Example:
    example = draw(batches(space, batch=(2, MAX_BATCH)))
    row = draw(st.integers(0, example.batch_size - 1), label="row")
    return replace(example, row=row)


def trailing_ordinary(tensors: dict[str, Any], layout: TokenLayout, special: frozenset[int]) -> int:
    """Return how many final positions hold ordinary tokens in every row: the most a decode may cover."""
    ordinary = ordinary_positions(tensors, layout, special)
    count = 0
    for position in range(ordinary.shape[1] - 1, -1, -1):
        if not bool(ordinary[:, position].all()):
            break
        count += 1
    return count


@st.composite
def cache_examples(draw: Any, space: InputSpace, model: ProbedModel, sides: tuple[str, ...]) -> Example:
    """Draw a batch past the sliding window and how many final positions to decode one at a time.

    The prefill keeps every special token (image placeholders need their pixels) and, for
    a model with a sliding window, more tokens than the window holds.
    """
    example = draw(batches(space, sides=sides, past_window=True))
    tensors = space.build(example.spec()).tensors
    layout = token_layout(tensors)
    assert layout is not None
    length = tensors[layout.stream].shape[1]
    room = min(MAX_DECODE_STEPS, trailing_ordinary(tensors, layout, model.special_ids), length - 1)
    if space.window is not None and space.window <= MAX_PROBED_WINDOW:
        room = min(room, length - space.window - 1)
    hypothesis.assume(room >= 1)
    steps = draw(st.integers(1, room), label="decode_steps")
    return replace(example, decode_steps=steps)


@st.composite
def generation_examples(
    draw: Any, space: InputSpace, sides: tuple[str, ...], batch: tuple[int, int] = (1, 3)
) -> Example:
    example = draw(batches(space, batch=batch, sides=sides, past_window=True))
    # The first new token comes from the prefill alone; only later ones read the cache.
    new_tokens = draw(st.integers(2, MAX_NEW_TOKENS), label="new_tokens")
    return replace(example, new_tokens=new_tokens)


@st.composite
def assisted_examples(draw: Any, space: InputSpace) -> Example:
    """Draw one row (assisted generation takes batch size 1), the tokens to generate and to draft per round."""
    example = draw(batches(space, batch=(1, 1), past_window=True))
    new_tokens = draw(st.integers(2, 2 * MAX_NEW_TOKENS), label="new_tokens")
    draft_tokens = draw(st.integers(1, 4), label="draft_tokens")
    return replace(example, new_tokens=new_tokens, draft_tokens=draft_tokens)


# Running a probe on drawn examples


class _ProbeFailed(AssertionError):
    def __init__(self, example: Example, outcome: ProbeOutcome) -> None:
        super().__init__(f"{example.describe()}: {outcome.describe_failure()}")
        self.example = example
        self.outcome = outcome


class _ProbeRaised(Exception):
    def __init__(self, example: Example, error: Exception) -> None:
        super().__init__(f"{example.describe()}: {type(error).__name__}: {error}")
        self.example = example


class ProbeRaisedError(RuntimeError):
    """A probe raised on a drawn example; the message starts with the minimal example that raises."""


@dataclass
class Exploration:
    """The result of :func:`explore`: the run count, and the failing or the worst passing run."""

    runs: int
    example: Example
    outcome: ProbeOutcome
    failed: bool
    deterministic: bool


def check_seed(key: str) -> int:
    """Return a stable seed for a check: the same key draws the same examples on every machine."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little")


def database_folder(root: Path, key: str) -> Path:
    """Return the example database folder of one check under ``root``."""
    return root / re.sub(r"[^A-Za-z0-9_.-]+", "_", key)


def explore(
    probe: Callable[[Example], ProbeOutcome],
    examples: st.SearchStrategy[Example],
    *,
    key: str,
    database: Path | None,
    share: float = 1.0,
) -> Exploration:
    """Run ``probe`` on examples drawn from ``examples`` until one fails or the budget is spent.

    The budget is ``share`` of the active profile's ``max_examples``. A deterministic
    profile seeds the draw with ``key`` (the check's id) and keeps no database, as
    Hypothesis's ``@seed`` requires. A random profile saves failing examples under
    ``database`` when it is given, and replays them first on the next run that uses the
    same folder. A probe that raises on an example raises :class:`ProbeRaisedError`
    naming the minimal such example.
    """
    profile = active_profile()
    deterministic = bool(profile.derandomize)
    budget = max(1, round(profile.max_examples * share))
    store = None
    if database is not None and not deterministic:
        store = DirectoryBasedExampleDatabase(str(database_folder(database, key)))
    state: dict[str, Any] = {"runs": 0, "worst": None}

    def run_one(example: Example) -> None:
        state["runs"] += 1
        try:
            outcome = probe(example)
        except Exception as error:  # noqa: BLE001 - shrunk, then re-raised with its example
            raise _ProbeRaised(example, error) from error
        if not outcome.passed:
            raise _ProbeFailed(example, outcome)
        worst = state["worst"]
        if worst is None or outcome.verdict.margin < worst[1].verdict.margin:
            state["worst"] = (example, outcome)

    search = hypothesis.given(examples)(run_one)
    search = hypothesis.settings(profile, max_examples=budget, derandomize=False, database=store)(search)
    if deterministic:
        search = hypothesis.seed(check_seed(key))(search)

    try:
        search()
    except _ProbeFailed as failure:
        return Exploration(state["runs"], failure.example, failure.outcome, True, deterministic)
    except _ProbeRaised as raised:
        cause = raised.__cause__
        raise ProbeRaisedError(
            f"minimal example {raised.example.describe()} raised {type(cause).__name__}: {cause}"
        ) from cause
    example, outcome = state["worst"]
    return Exploration(state["runs"], example, outcome, False, deterministic)
