"""Weight bytes of float and quantized modules, and the peak memory of a call."""

from __future__ import annotations

import numpy as np
import torch

from harness.memory import peak_memory, tensor_bytes, weight_bytes


def test_weight_bytes_counts_parameters_and_buffers():
    module = torch.nn.BatchNorm1d(8)

    # weight and bias (8 floats each), running mean and variance (8 floats each), batch count (one int64).
    assert weight_bytes(module) == 4 * 8 * 4 + 8


def test_weight_bytes_counts_tied_weights_once():
    embedding = torch.nn.Embedding(16, 4)
    head = torch.nn.Linear(4, 16, bias=False)
    head.weight = embedding.weight
    module = torch.nn.ModuleDict({"embedding": embedding, "head": head})

    assert weight_bytes(module) == 16 * 4 * 4


def test_quantized_weight_counts_its_int8_data():
    from torchao.quantization import Int8WeightOnlyConfig, quantize_

    module = torch.nn.Sequential(torch.nn.Linear(256, 256, bias=False))
    float_bytes = weight_bytes(module)
    quantize_(module, Int8WeightOnlyConfig())

    quantized = module[0].weight
    assert type(quantized) is not torch.nn.Parameter
    # int8 data plus one scale per output channel: about a quarter of fp32.
    assert tensor_bytes(quantized) < float_bytes / 3
    assert weight_bytes(module) == tensor_bytes(quantized)


def test_peak_memory_on_cpu_sees_a_large_allocation():
    allocations = []

    # numpy's 64 MiB buffer comes from fresh pages (glibc maps allocations this large anew),
    # whereas torch may serve a tensor from memory an earlier test freed but kept resident.
    def allocate():
        allocations.append(np.ones(16 * 2**20, dtype=np.float32))

    memory = peak_memory(allocate, "cpu")

    assert memory.kind == "resident set growth"
    assert memory.bytes >= 32 * 2**20
