"""Quantized backends: one backend per quantization scheme, all of the ``quantized`` family.

Each scheme is loaded the way users load it: the case's checkpoint folder (written by
``save_pretrained``) through ``from_pretrained(..., quantization_config=..., device_map=...)``.
Where the library's own call quantizes differently from the Transformers path, that call is
a variant of its own. torchao's ``quantize_`` and quanto's ``quantize`` convert every
``nn.Linear``, the output projection included, while Transformers leaves the output
embeddings and tied weights in float. Variant ids read ``quantized-int8wo:fp32:transformers``
and ``quantized-int8wo:fp32:direct``, where the dtype is the one the float parts compute in.

Schemes that need a GPU are variants on every device and are skipped with the reason where
they cannot run, so a CPU run still lists them.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import re
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch._inductor.config
import transformers

from harness.backends.base import Backend, PreparedModel, Variant, VariantSkipped, timed
from harness.backends.eager import device_dtype_skip_reason
from harness.cases import BuiltCase, Case, load_model
from harness.cases.build import auto_class
from harness.inputs import PLAIN, ModelInputs, build_inputs

log = logging.getLogger(__name__)

TRANSFORMERS_PATH = "transformers"
DIRECT_PATH = "direct"

# Messages with which a library rejects a scheme for this model or device. Such a load is a
# skip with the message as its reason, and any other failure is an error.
_UNSUPPORTED = re.compile(r"not supported|requires|only supports|is not available|no kernel|needs", re.I)


@dataclass(frozen=True)
class Scheme:
    """A quantization scheme: how to build it, where it runs, and what it promises about weights.

    ``weight_error_bound`` is the largest max |dequantized - float| / max |float| the format
    allows for one weight tensor: half a quantization step at the top of the range, since
    every scheme here scales by the absolute maximum of a row, group or block, which is at
    most the tensor's. ``converts_conv1d`` is true when the Transformers path also converts
    GPT-2 style ``Conv1D`` projections, besides the ``nn.Linear`` layers every scheme converts.
    """

    name: str
    label: str
    library: str
    package: str
    transformers_config: Callable[[torch.dtype], Any]
    weight_error_bound: float
    direct: Callable[[torch.nn.Module, torch.dtype], None] | None = None
    dtypes: tuple[str, ...] = ("fp32", "bf16")
    converts_conv1d: bool = False
    # None: runs on CPU and CUDA. Otherwise the minimum CUDA compute capability.
    min_capability: tuple[int, int] | None = None
    gpu_requirement: str = ""
    extra_packages: tuple[str, ...] = ()
    # Quantization groups along a linear layer's input features; every converted layer's
    # input size must be a multiple of it.
    group_size: int | None = None
    # quanto's 4-bit weights fail under torch.inference_mode (optimum-quanto 0.2.7 sets a
    # tensor's version counter in QBitsTensor.t()), so its forwards run under no_grad.
    inference_mode: bool = True


def _half_step(levels_each_side: float) -> float:
    """Return half a quantization step relative to the range maximum, for a symmetric integer format."""
    return 1.0 / (2.0 * levels_each_side)


# Configs are built inside functions so that importing this module imports no quantization library.


def _torchao_int8_weight_only(dtype: torch.dtype) -> Any:
    from torchao.quantization import Int8WeightOnlyConfig

    return Int8WeightOnlyConfig()


def _torchao_int8_dynamic(dtype: torch.dtype) -> Any:
    from torchao.quantization import Int8DynamicActivationInt8WeightConfig

    return Int8DynamicActivationInt8WeightConfig()


def _torchao_intx_int4(dtype: torch.dtype) -> Any:
    from torchao.quantization import IntxWeightOnlyConfig, PerGroup

    return IntxWeightOnlyConfig(weight_dtype=torch.int4, granularity=PerGroup(32))


def _torchao_int4_weight_only(dtype: torch.dtype) -> Any:
    from torchao.quantization import Int4WeightOnlyConfig

    # The tile-packed format runs on torch's own tinygemm CUDA kernel; the plain format needs fbgemm-gpu-genai.
    return Int4WeightOnlyConfig(group_size=32, int4_packing_format="tile_packed_to_4d")


def _torchao_float8(dtype: torch.dtype) -> Any:
    from torchao.quantization import Float8DynamicActivationFloat8WeightConfig

    return Float8DynamicActivationFloat8WeightConfig()


def _through_transformers(make: Callable[[torch.dtype], Any]) -> Callable[[torch.dtype], Any]:
    def config(dtype: torch.dtype) -> Any:
        from transformers import TorchAoConfig

        return TorchAoConfig(make(dtype))

    return config


def _torchao_direct(make: Callable[[torch.dtype], Any]) -> Callable[[torch.nn.Module, torch.dtype], None]:
    def quantize(module: torch.nn.Module, dtype: torch.dtype) -> None:
        from torchao.quantization import quantize_

        quantize_(module, make(dtype))

    return quantize


def _bnb_int8(dtype: torch.dtype) -> Any:
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_8bit=True)


def _bnb_nf4(dtype: torch.dtype) -> Any:
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype)


def _quanto(weights: str) -> Callable[[torch.dtype], Any]:
    def config(dtype: torch.dtype) -> Any:
        from transformers import QuantoConfig

        return QuantoConfig(weights=weights)

    return config


def _quanto_direct(weights: str) -> Callable[[torch.nn.Module, torch.dtype], None]:
    def quantize(module: torch.nn.Module, dtype: torch.dtype) -> None:
        from optimum.quanto import freeze, qint4, qint8, quantize

        quantize(module, weights={"int8": qint8, "int4": qint4}[weights])
        freeze(module)

    return quantize


def _fine_grained_fp8(dtype: torch.dtype) -> Any:
    from transformers import FineGrainedFP8Config

    return FineGrainedFP8Config()


def _mxfp4(dtype: torch.dtype) -> Any:
    from transformers import Mxfp4Config

    return Mxfp4Config()


def _nvfp4(dtype: torch.dtype) -> Any:
    from transformers import NVFP4Config

    return NVFP4Config()


# Weight error bounds, as fractions of the tensor's max |w|:
# - int8 scaled by absmax / 127 is off by at most absmax / 254.
# - torchao's symmetric int4 maps absmax to 7.5 levels, so half a step is absmax / 15.
# - NF4's widest gap lies between its levels -1.0 and -0.6962, and half of it is 0.152.
# - FP8 e4m3 keeps 3 mantissa bits, a relative rounding error of at most 2**-4.
# - FP4 e2m1 has levels 4 and 6 at the top of its range, so half that gap is 1/6 of the
#   block maximum. MXFP4's power-of-two scale can leave the block maximum at half the
#   range, which doubles it.
SCHEMES: tuple[Scheme, ...] = (
    Scheme(
        name="int8wo",
        label="torchao int8 weight-only",
        library="torchao",
        package="torchao",
        transformers_config=_through_transformers(_torchao_int8_weight_only),
        direct=_torchao_direct(_torchao_int8_weight_only),
        weight_error_bound=_half_step(127),
    ),
    Scheme(
        name="int8dq",
        label="torchao int8 dynamic-activation int8 weight",
        library="torchao",
        package="torchao",
        transformers_config=_through_transformers(_torchao_int8_dynamic),
        direct=_torchao_direct(_torchao_int8_dynamic),
        weight_error_bound=_half_step(127),
    ),
    Scheme(
        name="intx-int4",
        label="torchao int4 weight-only through IntxWeightOnlyConfig (groups of 32)",
        library="torchao",
        package="torchao",
        transformers_config=_through_transformers(_torchao_intx_int4),
        direct=_torchao_direct(_torchao_intx_int4),
        weight_error_bound=_half_step(7.5),
        group_size=32,
    ),
    Scheme(
        name="bnb-int8",
        label="bitsandbytes LLM.int8()",
        library="bitsandbytes",
        package="bitsandbytes",
        transformers_config=_bnb_int8,
        # Int8Params quantizes from an fp16 copy of the weight, which adds fp16 rounding (2**-11).
        weight_error_bound=_half_step(127) + 2.0**-11,
        converts_conv1d=True,
    ),
    Scheme(
        name="bnb-nf4",
        label="bitsandbytes NF4",
        library="bitsandbytes",
        package="bitsandbytes",
        transformers_config=_bnb_nf4,
        # bitsandbytes keeps the block absmax, and on CPU computes the 4-bit matmul, in bf16:
        # 2**-7 of the block maximum covers both roundings.
        weight_error_bound=(1.0 - 0.6962) / 2 + 2.0**-7,
        converts_conv1d=True,
    ),
    Scheme(
        name="quanto-int8",
        label="optimum-quanto int8 weights",
        library="optimum-quanto",
        package="optimum.quanto",
        transformers_config=_quanto("int8"),
        direct=_quanto_direct("int8"),
        weight_error_bound=_half_step(127),
        inference_mode=False,
    ),
    Scheme(
        name="quanto-int4",
        label="optimum-quanto int4 weights",
        library="optimum-quanto",
        package="optimum.quanto",
        transformers_config=_quanto("int4"),
        direct=_quanto_direct("int4"),
        weight_error_bound=_half_step(7.5),
        inference_mode=False,
    ),
    # NOTE: the GPU schemes below have never been run by this harness. Their configs and
    # bounds follow the source of transformers 5.25 and torchao 0.18.
    Scheme(
        name="int4wo",
        label="torchao int4 weight-only (tinygemm)",
        library="torchao",
        package="torchao",
        transformers_config=_through_transformers(_torchao_int4_weight_only),
        direct=_torchao_direct(_torchao_int4_weight_only),
        weight_error_bound=_half_step(7.5),
        group_size=32,
        dtypes=("bf16",),
        min_capability=(8, 0),
        gpu_requirement="torch's tinygemm int4 kernel is CUDA-only",
    ),
    Scheme(
        name="float8",
        label="torchao float8 dynamic-activation float8 weight",
        library="torchao",
        package="torchao",
        transformers_config=_through_transformers(_torchao_float8),
        direct=_torchao_direct(_torchao_float8),
        weight_error_bound=2.0**-4,
        dtypes=("bf16",),
        min_capability=(8, 9),
        gpu_requirement="float8 matmul kernels exist for Ada, Hopper and newer GPUs",
    ),
    Scheme(
        name="fp8",
        label="Transformers fine-grained FP8 (128x128 blocks)",
        library="transformers",
        package="transformers",
        transformers_config=_fine_grained_fp8,
        weight_error_bound=2.0**-4,
        dtypes=("bf16",),
        min_capability=(8, 9),
        gpu_requirement="on older GPUs Transformers dequantizes FP8 to bf16, so the variant would not test FP8",
    ),
    Scheme(
        name="mxfp4",
        label="Transformers MXFP4",
        library="transformers",
        package="transformers",
        transformers_config=_mxfp4,
        weight_error_bound=2.0 / 6.0,
        dtypes=("bf16",),
        min_capability=(7, 5),
        gpu_requirement="its kernels come from triton and the kernels package",
        extra_packages=("triton", "kernels"),
    ),
    Scheme(
        name="nvfp4",
        label="Transformers NVFP4",
        library="transformers",
        package="transformers",
        transformers_config=_nvfp4,
        weight_error_bound=1.0 / 6.0 + 2.0**-4,
        dtypes=("bf16",),
        min_capability=(10, 0),
        gpu_requirement="it needs Blackwell block-scaled tensor cores",
        extra_packages=("kernels",),
    ),
)
SCHEMES_BY_NAME = {scheme.name: scheme for scheme in SCHEMES}


def _missing_package(names: tuple[str, ...]) -> str | None:
    for name in names:
        try:
            found = importlib.util.find_spec(name) is not None
        except ModuleNotFoundError:
            found = False
        if not found:
            return name
    return None


class QuantizedBackend(Backend):
    """A backend that runs one :class:`Scheme`; subclasses set ``scheme`` and get their name from it."""

    family = "quantized"
    scheme: ClassVar[Scheme]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "scheme" in cls.__dict__:
            cls.name = f"quantized-{cls.scheme.name}"
            cls.description = f"{cls.scheme.label} ({cls.scheme.library})"

    def paths(self) -> tuple[str, ...]:
        return (TRANSFORMERS_PATH, DIRECT_PATH) if self.scheme.direct is not None else (TRANSFORMERS_PATH,)

    def variants(self, case: Case, device: str) -> list[Variant]:
        return [Variant(self.name, dtype, (("path", path),)) for dtype in self.scheme.dtypes for path in self.paths()]

    def default_variants(self, case: Case, device: str) -> list[Variant]:
        """Return the Transformers path in the scheme's first dtype (fp32 for CPU schemes, as the reference)."""
        first = self.scheme.dtypes[0]
        return [
            variant
            for variant in self.variants(case, device)
            if variant.dtype == first and variant.setting("path") == TRANSFORMERS_PATH
        ]

    def unavailable_reason(self, device: str) -> str | None:
        scheme = self.scheme
        if scheme.min_capability is not None:
            needed = ".".join(str(part) for part in scheme.min_capability)
            reason = scheme.gpu_requirement
            if device != "cuda":
                return f"{scheme.label} runs on CUDA GPUs of compute capability {needed} or newer: {reason}"
            capability = torch.cuda.get_device_capability()
            if capability < scheme.min_capability:
                found = ".".join(str(part) for part in capability)
                return f"{scheme.label} needs compute capability {needed} or newer, found {found}: {reason}"
        missing = _missing_package((scheme.package, *scheme.extra_packages))
        if missing is not None:
            return f"{scheme.label} needs the {missing!r} package, which is not installed"
        return None

    def skip_reason(self, case: Case, variant: Variant, device: str) -> str | None:
        return self.unavailable_reason(device) or device_dtype_skip_reason(variant.torch_dtype, device)

    def prepare(self, built: BuiltCase, variant: Variant, device: str) -> PreparedModel:
        path = variant.setting("path", TRANSFORMERS_PATH)
        if self.scheme.group_size is not None:
            layer = _linear_not_divisible(built, self.scheme.group_size)
            if layer is not None:
                raise VariantSkipped(
                    f"{self.scheme.label} quantizes in groups of {self.scheme.group_size} input features, "
                    f"and {layer[0]} has {layer[1]}"
                )
        # torchao's configs set inductor options globally when they quantize (for the user's
        # later torch.compile), which would change how compiled variants of later cases compile.
        inductor_config = torch._inductor.config.get_config_copy()
        with timed() as elapsed:
            try:
                module, not_converted = self._load(built, variant.torch_dtype, device, path)
            except Exception as error:  # noqa: BLE001 - re-raised unless the library rejected the model
                self._skip_if_library_rejects(built, error)
                raise
            finally:
                torch._inductor.config.load_config(inductor_config)
            try:
                self._run_once(built, module, variant, device)
            except Exception as error:  # noqa: BLE001 - any crash of the forward means the variant cannot run
                message = str(error).strip().splitlines()[0] if str(error).strip() else ""
                raise VariantSkipped(
                    f"{self.scheme.label} loads {built.case.id}, but its forward fails here: "
                    f"{type(error).__name__}: {message} (raised in {innermost_frame(error)})"
                ) from error
        info = {
            "quantization": {
                "scheme": self.scheme.name,
                "label": self.scheme.label,
                "path": path,
                "weight_error_bound": self.scheme.weight_error_bound,
                "converts_conv1d": self.scheme.converts_conv1d and path == TRANSFORMERS_PATH,
                "modules_not_converted": sorted(not_converted),
            }
        }
        prepared_class = PreparedModel if self.scheme.inference_mode else GradFreePreparedModel
        return prepared_class(variant=variant, module=module, device=device, prepare_seconds=elapsed[0], info=info)

    def _load(self, built: BuiltCase, dtype: torch.dtype, device: str, path: str) -> tuple[torch.nn.Module, list[str]]:
        """Load the case quantized along ``path``; return it and the modules the quantizer left in float on purpose."""
        if path == DIRECT_PATH:
            assert self.scheme.direct is not None
            module = load_model(built, dtype, device)
            self.quantize_directly(module, dtype)
            return module, []
        with transformers_load_report() as report:
            try:
                module = load_model(built, dtype, device, quantization_config=self.scheme.transformers_config(dtype))
            except RuntimeError as error:
                errors = conversion_errors(report)
                if not errors:
                    raise
                raise RuntimeError(
                    f"Transformers failed to convert the checkpoint's weights: {'; '.join(errors)}"
                ) from error
        quantizer = getattr(module, "hf_quantizer", None)
        return module, list(getattr(quantizer, "modules_to_not_convert", None) or [])

    def _run_once(self, built: BuiltCase, module: torch.nn.Module, variant: Variant, device: str) -> None:
        """Run one forward, so that a variant whose kernels cannot run this model is skipped with the reason.

        Such crashes are library limitations on this device (bitsandbytes 0.50.2's CPU path
        rejects some layer shapes and inputs with more than three dimensions), not a result.
        """
        inputs = build_inputs(built.case.inputs, built.config, PLAIN, built.tokenizer)
        with torch.no_grad():
            module(**inputs.to(device, variant.torch_dtype))

    def _skip_if_library_rejects(self, built: BuiltCase, error: Exception) -> None:
        """Raise VariantSkipped when the quantization library itself rejected or failed on the model.

        That is the case when its message reports the model or device as unsupported, or
        when the exception comes from the library's own code, such as a kernel that cannot
        handle a layer's shape on this device. Errors raised elsewhere (Transformers, the
        harness) propagate.
        """
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        where = raised_in_library(error)
        if where is not None:
            raise VariantSkipped(
                f"{self.scheme.label} fails on {built.case.id} here: {type(error).__name__}: {message} "
                f"(raised in {where})"
            ) from error
        if isinstance(error, (ValueError, NotImplementedError, RuntimeError, ImportError)) and _UNSUPPORTED.search(
            message
        ):
            raise VariantSkipped(f"{self.scheme.label} cannot load {built.case.id}: {message}") from error

    def quantize_directly(self, module: torch.nn.Module, dtype: torch.dtype) -> None:
        """Quantize a float model in place with the library's own call."""
        assert self.scheme.direct is not None
        self.scheme.direct(module, dtype)


@contextlib.contextmanager
def transformers_load_report() -> Iterator[list[str]]:
    """Collect the warnings Transformers logs during the block, its load report among them.

    The harness keeps Transformers' logging at errors only, but the load report, the only
    place that names the weight that failed to convert, is logged as a warning.
    """
    messages: list[str] = []

    class Collector(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            messages.append(record.getMessage())

    library_logger = logging.getLogger("transformers")
    collector = Collector(level=logging.WARNING)
    verbosity = transformers.utils.logging.get_verbosity()
    propagate = library_logger.propagate
    library_logger.addHandler(collector)
    # Transformers' own handler would print the report as well; the collected copy is enough.
    library_logger.propagate = False
    transformers.utils.logging.set_verbosity_warning()
    saved_handlers = [handler for handler in library_logger.handlers if handler is not collector]
    for handler in saved_handlers:
        library_logger.removeHandler(handler)
    try:
        yield messages
    finally:
        library_logger.removeHandler(collector)
        for handler in saved_handlers:
            library_logger.addHandler(handler)
        library_logger.propagate = propagate
        transformers.utils.logging.set_verbosity(verbosity)


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def conversion_errors(messages: list[str], limit: int = 3) -> list[str]:
    """Return the "Error:" lines of Transformers' load report, each with the exception line above it."""
    errors: list[str] = []
    for message in messages:
        lines = [_ANSI.sub("", line).strip() for line in message.splitlines()]
        for index, line in enumerate(lines):
            if line.startswith("Error:"):
                cause = lines[index - 1] if index and lines[index - 1] else ""
                errors.append(f"{cause} ({line.removeprefix('Error:').strip()})" if cause else line)
    return errors[:limit]


def _linear_not_divisible(built: BuiltCase, group_size: int) -> tuple[str, int] | None:
    """Return the first linear layer whose input features are not a multiple of ``group_size``.

    The model is built on the meta device from the config, which allocates no weights.
    """
    with torch.device("meta"):
        model = auto_class(built.case.auto_class).from_config(
            built.config, trust_remote_code=built.case.trust_remote_code
        )
    output_embeddings = model.get_output_embeddings()
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and module is not output_embeddings and module.in_features % group_size:
            return name, module.in_features
    return None


# Path fragments of the quantization libraries: an exception raised in their code means
# the scheme cannot handle the model.
_LIBRARY_PATHS = ("/bitsandbytes/", "/torchao/", "/optimum/quanto/")


def raised_in_library(error: BaseException) -> str | None:
    """Return ``file:line`` of the innermost frame in a quantization library, across chained errors."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        for frame in reversed(traceback.extract_tb(current.__traceback__)):
            path = frame.filename.replace(os.sep, "/")
            if any(fragment in path for fragment in _LIBRARY_PATHS):
                return f"{path.rsplit('site-packages/', 1)[-1]}:{frame.lineno}"
        current = current.__cause__ or current.__context__
    return None


def innermost_frame(error: BaseException) -> str:
    """Return ``file:line`` of the frame that raised ``error``, relative to site-packages."""
    frames = traceback.extract_tb(error.__traceback__)
    if not frames:
        return "unknown location"
    path = frames[-1].filename.replace(os.sep, "/")
    return f"{path.rsplit('site-packages/', 1)[-1]}:{frames[-1].lineno}"


class GradFreePreparedModel(PreparedModel):
    """A prepared model whose forwards run under ``torch.no_grad`` instead of ``torch.inference_mode``."""

    def forward(self, inputs: ModelInputs) -> Any:
        call = self.runner if self.runner is not None else self.module
        with torch.no_grad():
            return call(**inputs.to(self.device, self.variant.torch_dtype))


class Int8WeightOnlyBackend(QuantizedBackend):
    scheme = SCHEMES_BY_NAME["int8wo"]


class Int8DynamicBackend(QuantizedBackend):
    scheme = SCHEMES_BY_NAME["int8dq"]


class IntxInt4Backend(QuantizedBackend):
    scheme = SCHEMES_BY_NAME["intx-int4"]


class BitsAndBytesInt8Backend(QuantizedBackend):
    scheme = SCHEMES_BY_NAME["bnb-int8"]


class BitsAndBytesNF4Backend(QuantizedBackend):
    scheme = SCHEMES_BY_NAME["bnb-nf4"]


class QuantoInt8Backend(QuantizedBackend):
    scheme = SCHEMES_BY_NAME["quanto-int8"]


class QuantoInt4Backend(QuantizedBackend):
    scheme = SCHEMES_BY_NAME["quanto-int4"]


class Int4WeightOnlyBackend(QuantizedBackend):
    scheme = SCHEMES_BY_NAME["int4wo"]


class Float8Backend(QuantizedBackend):
    scheme = SCHEMES_BY_NAME["float8"]


class FineGrainedFP8Backend(QuantizedBackend):
    scheme = SCHEMES_BY_NAME["fp8"]


class Mxfp4Backend(QuantizedBackend):
    scheme = SCHEMES_BY_NAME["mxfp4"]


class Nvfp4Backend(QuantizedBackend):
    scheme = SCHEMES_BY_NAME["nvfp4"]
