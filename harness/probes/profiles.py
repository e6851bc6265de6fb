"""Hypothesis settings profiles for the probes that draw their inputs.

``harness-ci`` (used unless ``--hypothesis-profile`` names another) is deterministic: each
check draws the same examples on every run, seeded by its id, so a run's verdicts repeat
and a failure replays by running the same check again. ``harness-explore`` draws fresh
random examples, ten times as many, for hunting bugs by hand. Its failures are saved in the
example database under the run's folder (``<run>/hypothesis/<check>/``). Rerunning with
the same ``--run-id`` and profile replays them first. ``--hypothesis-seed`` fixes the
random draw but turns the database off (Hypothesis keeps none for a seeded test).

``max_examples`` is the budget of the forward probes; a generation probe runs half of it.

The pytest plugin imports this module, so the profiles exist before Hypothesis's own plugin
loads the one ``--hypothesis-profile`` names.
"""

from __future__ import annotations

from hypothesis import HealthCheck, Phase, settings

PROFILE_CI = "harness-ci"
PROFILE_EXPLORE = "harness-explore"

# The explain phase reruns a failure many times to annotate it; the message already names the example.
_PHASES = (Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink)
_COMMON = {
    # Forward times vary with the machine's load; a deadline would fail checks at random.
    "deadline": None,
    "phases": _PHASES,
    "print_blob": False,
    # One failure per check: the message carries one minimal example.
    "report_multiple_bugs": False,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
}

# Three examples per check: Hypothesis tries the simplest one first, then two drawn at random.
settings.register_profile(PROFILE_CI, derandomize=True, max_examples=3, **_COMMON)
settings.register_profile(PROFILE_EXPLORE, derandomize=False, max_examples=30, **_COMMON)


# Profiles Hypothesis loads by itself: "default", and "ci" when a CI environment variable is set.
_IMPLICIT_PROFILES = ("default", "ci")


def active_profile() -> settings:
    """Return the profile the run selected, or ``harness-ci`` when it selected none."""
    if settings.get_current_profile_name() in _IMPLICIT_PROFILES:
        return settings.get_profile(PROFILE_CI)
    return settings.default
