"""A pytest plugin that registers backends which crash or hang, for runs in worker processes.

Loaded with ``-p tests.fault_plugin`` so that pytest-xdist workers register the backends too
(``register_backend`` in the test process would reach only that process).
"""

from __future__ import annotations

import os
import signal
import time

from harness.backends import PreparedModel, Variant, register_backend
from harness.backends.eager import EagerBackend
from harness.cases import BuiltCase, Case


class _EagerRenamed(EagerBackend):
    def variants(self, case: Case, device: str) -> list[Variant]:
        return [Variant(self.name, variant.dtype, variant.settings) for variant in super().variants(case, device)]

    def prepare(self, built: BuiltCase, variant: Variant, device: str) -> PreparedModel:
        prepared = super().prepare(built, Variant("eager", variant.dtype, variant.settings), device)
        prepared.variant = variant
        return prepared


class SegfaultingBackend(_EagerRenamed):
    """Kills its own process with SIGSEGV when preparing a bf16 variant, as a broken kernel would."""

    name = "segfaulting"

    def prepare(self, built: BuiltCase, variant: Variant, device: str) -> PreparedModel:
        if variant.dtype == "bf16":
            os.kill(os.getpid(), signal.SIGSEGV)
        return super().prepare(built, variant, device)


class HangingBackend(_EagerRenamed):
    """Never returns from a bf16 forward, as a deadlocked kernel would."""

    name = "hanging"

    def prepare(self, built: BuiltCase, variant: Variant, device: str) -> PreparedModel:
        prepared = super().prepare(built, variant, device)
        if variant.dtype == "bf16":
            prepared.runner = lambda **inputs: time.sleep(3600)
        return prepared


# Registered on import: pytest imports -p plugins before any pytest_configure runs, and the
# harness validates --backends in its own pytest_configure.
register_backend(SegfaultingBackend())
register_backend(HangingBackend())
