"""Stress profiles: selection, exact restore of edits, power-of-two factors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from harness.stress import (
    PROFILES,
    EditNotApplicable,
    WeightEdit,
    applied,
    power_of_two_factor,
    select_profiles,
)


def test_default_profiles_include_gemma4_vision_pooler():
    names = [profile.name for profile in select_profiles(None)]

    assert "gemma4-vision-pooler" in names
    assert names == [profile.name for profile in select_profiles("default")]


def test_none_and_all_selectors():
    assert select_profiles("none") == []
    assert [profile.name for profile in select_profiles("all")] == list(PROFILES)


def test_unknown_profile_is_rejected_with_known_names():
    with pytest.raises(ValueError, match="unknown stress profile 'entry-scal'; known profiles: default, all, none, "):
        select_profiles("entry-scal")


def test_every_profile_says_what_it_scales():
    for profile in PROFILES.values():
        assert len(profile.description) > 60, profile.name


def test_power_of_two_factor_rounds_or_reaches_target():
    assert power_of_two_factor(0.25, 4096.0) == 2.0**14
    assert power_of_two_factor(3.0, 80_000.0, at_least=True) == 2.0**15
    assert 3.0 * power_of_two_factor(3.0, 80_000.0, at_least=True) >= 80_000.0


def test_power_of_two_factor_rejects_zero():
    with pytest.raises(ValueError, match="max |value| of 0"):
        power_of_two_factor(0.0, 4096.0)


def test_applied_edits_are_restored_exactly():
    model = nn.Sequential(nn.Linear(3, 3), nn.LayerNorm(3))
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    replacement = torch.arange(3, dtype=torch.float32)
    edits = [
        WeightEdit("0.weight", factor=2.0**10),
        WeightEdit("1.bias", values=replacement),
        WeightEdit("0", factor=4.0, scales_output=True),
    ]

    with applied(model, edits):
        assert torch.equal(model[0].weight, before["0.weight"] * 1024)
        assert torch.equal(model[1].bias, replacement)
        assert model[0]._forward_hooks

    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, before[name]), name
    assert not model[0]._forward_hooks


def test_output_scale_is_seen_by_later_hooks():
    model = nn.Sequential(nn.Identity())
    seen = []
    with applied(model, [WeightEdit("0", factor=8.0, scales_output=True)]):
        model[0].register_forward_hook(lambda module, args, output: seen.append(output))
        model(torch.ones(1))

    assert seen[0].item() == 8.0


def test_edit_of_missing_parameter_is_not_applicable():
    model = nn.Sequential(nn.Linear(2, 2))

    with (
        pytest.raises(EditNotApplicable, match="no parameter or buffer '0.gain'"),
        applied(model, [WeightEdit("0.gain", factor=2.0)]),
    ):
        pass
