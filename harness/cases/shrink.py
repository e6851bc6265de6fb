"""Shrink a model type's default config to a tiny one while keeping coupled sizes consistent.

The shrinker works on the default config's ``to_dict()``, recursively over sub-configs, and
applies rules per family of configuration attribute rather than per model:

- widths: every hidden size becomes 64, every feed-forward size 128 (32 for experts), every
  head count 4 (2 key/value heads under grouped-query attention), every explicit head size
  16. Any other width that equalled an original hidden or feed-forward size anywhere in the
  tree is mapped the same way, since such values are coupled (projector input sizes,
  ``mm_hidden_size``, ``text_hidden_size`` ...).
- layers: a layer count is cut to the shortest prefix that still keeps one layer of every
  kind, where a layer's kind comes from every per-layer list (``layer_types``,
  ``mlp_layer_types``, a hybrid pattern string), every list of layer indices and every
  ``*_period``/``*_offset`` pair; per-layer lists are cut to that prefix.
- rotary sections (``mrope_section``) are rescaled to the new head size, MoE counts become
  4 experts with 2 active, special token ids are moved inside the shrunk vocabulary without
  colliding, images become 32 pixels with patches of at most 8, and vision sizes derived
  from the patch grid (``num_patches``, tokens per image) follow the new grid.

The result is a complete config dict; :func:`tiny_config_dict` returns it and
``CONFIG_MAPPING[model_type](**result)`` builds the tiny config.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Iterable
from typing import Any

HIDDEN = 64
INTERMEDIATE = 128
EXPERT_INTERMEDIATE = 32
HEADS = 4
KV_HEADS = 2
HEAD_DIM = 16
LAYERS = 2
# A layer prefix longer than this keeps only the first layers; some layer kind may then be missing.
MAX_LAYERS = 12
VOCAB = 512
EXPERTS = 4
ACTIVE_EXPERTS = 2
IMAGE = 32
PATCH = 8
MAX_POSITIONS = 2048
SMALL_WIDTH = 64

_HIDDEN_KEYS = {
    "hidden_size",
    "d_model",
    "n_embd",
    "embed_dim",
    "embedding_size",
    "hidden_dim",
    "dim",
    "model_dim",
    "d_embed",
    "word_embed_proj_dim",
    "embedding_dim",
    "projection_dim",
    "text_hidden_size",
    "vision_hidden_size",
    "encoder_hidden_size",
    "decoder_hidden_size",
    "out_hidden_size",
    "output_hidden_size",
    "projector_hidden_size",
    "mm_hidden_size",
    "encoder_hidden_dim",
    "decoder_hidden_dim",
    "vision_embed_dim",
    "text_embed_dim",
    "hidden_size_per_layer_input",
}
_LAYER_COUNT_KEYS = {
    "num_hidden_layers",
    "num_layers",
    "n_layer",
    "n_layers",
    "encoder_layers",
    "decoder_layers",
    "num_decoder_layers",
    "num_encoder_layers",
    "decoder_num_layers",
    "encoder_num_layers",
    "depth",
}
_EXPERT_COUNT_KEYS = {"num_experts", "num_local_experts", "n_routed_experts", "moe_num_experts", "num_routed_experts"}
_ACTIVE_EXPERT_KEYS = {"num_experts_per_tok", "moe_topk", "num_experts_per_token", "top_k_experts", "moe_k"}
_GROUP_KEYS = {"n_group", "n_groups", "mamba_n_groups", "num_expert_groups"}
# Names that hold ids, positions, lengths or counts of things other than widths.
_NOT_A_WIDTH = re.compile(
    r"token|_id$|_ids$|index|vocab|position|window|kernel|stride|pool|sampl|chunk|seq|length|_len|"
    r"context|image_size|patch|label|bucket|max_|num_|_rate|frames|period|offset|layers|factor|codebook",
)
_WIDTH_WORDS = re.compile(r"hidden|_dim$|^dim|size$|channels|embd|embed|width|^d_|rank|_dim_|proj")
_SPECIAL_ID = re.compile(r"(_token_id|_token_index|_id)$")
_GRID_DERIVED = re.compile(
    r"num_patches|num_positions|num_position_embeddings|position_embedding_size|tokens_per_image|image_seq_length|num_image_tokens|pos_emb_(height|width)|posemb_grid_size"
)
_LAYER_INDEX_LIST = re.compile(
    r"(layer|block)s?_?(idx|idxs|ids|indices|indexes)$|attn_indexes$|attention_layers$|^full_attn|visual_indexes$|attn_layer_indices$|kv_source_layers$"
)
_PER_LAYER_NAME = re.compile(r"layer_types|block_type|layers_block_type|pattern|_per_layer$|no_rope_layers")


def is_config_dict(value: Any) -> bool:
    return isinstance(value, dict) and "model_type" in value


def sub_config_dicts(node: dict[str, Any]) -> Iterable[dict[str, Any]]:
    for value in node.values():
        if is_config_dict(value):
            yield value
        elif isinstance(value, list):
            yield from (item for item in value if is_config_dict(item))


def walk(node: dict[str, Any]) -> Iterable[dict[str, Any]]:
    """Yield ``node`` and every nested config dict, parents before children."""
    yield node
    for child in sub_config_dicts(node):
        yield from walk(child)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_int_list(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(_is_int(item) for item in value)


class SizeMap:
    """Original hidden and feed-forward widths found anywhere in the tree, and what they become."""

    def __init__(self, tree: dict[str, Any]) -> None:
        self.widths: dict[int, int] = {}
        for node in walk(tree):
            for key, value in node.items():
                if not _is_int(value) or value <= SMALL_WIDTH:
                    continue
                if key in _HIDDEN_KEYS:
                    self.widths.setdefault(value, HIDDEN)
        for node in walk(tree):
            for key, value in node.items():
                if _is_int(value) and value > INTERMEDIATE and is_intermediate_key(key):
                    self.widths.setdefault(value, EXPERT_INTERMEDIATE if is_expert_key(key) else INTERMEDIATE)

    def width(self, value: int) -> int | None:
        return self.widths.get(value)


def is_intermediate_key(key: str) -> bool:
    return (
        "intermediate" in key
        or "ffn" in key
        or key in {"d_ff", "mlp_dim", "n_inner", "inner_dim", "ffn_hidden_size", "decoder_intermediate_size"}
    )


def is_expert_key(key: str) -> bool:
    return "moe" in key or "expert" in key


def is_head_count_key(key: str) -> bool:
    return key.endswith(("attention_heads", "num_heads", "n_head", "n_heads", "_heads", "attention_heads_per_stage"))


def is_head_dim_key(key: str) -> bool:
    return key.endswith(("head_dim", "head_size", "d_kv", "d_head", "dim_head", "lora_rank", "attention_head_size"))


def special_id_map(tree: dict[str, Any]) -> dict[int, int]:
    """Map every special token id at or above the shrunk vocabulary to a distinct id below it."""
    ids: set[int] = set()
    for node in walk(tree):
        for key, value in node.items():
            if not _SPECIAL_ID.search(key):
                continue
            values = value if isinstance(value, list) else [value]
            ids.update(item for item in values if _is_int(item) and item >= VOCAB)
    return {original: VOCAB - 1 - rank for rank, original in enumerate(sorted(ids))}


def tiny_config_dict(default: dict[str, Any]) -> dict[str, Any]:
    """Return a shrunk copy of a default config dict (``config.to_dict()``)."""
    tree = copy.deepcopy(default)
    tree.pop("transformers_version", None)
    sizes = SizeMap(tree)
    ids = special_id_map(tree)
    for node in walk(tree):
        _shrink_node(node, sizes, ids)
    _fit_vision_feature_layers(tree)
    return tree


# Backbone stage selections derive from the stage count, which shrinking may change; the
# config recomputes them (selecting the last stage) when they are absent.
_STAGE_SELECTIONS = ("stage_names", "out_features", "out_indices")


def _shrink_node(node: dict[str, Any], sizes: SizeMap, ids: dict[int, int]) -> None:
    for key in _STAGE_SELECTIONS:
        value = node.get(key)
        # Some models reuse out_features for a list of widths, which the width rules shrink.
        if value is not None and not _is_int_list(value) or key == "out_indices":
            node.pop(key, None)
    grid = _shrink_image(node)
    depths = node.get("depths")
    if _is_int_list(depths) and _is_int(node.get("window_size")):
        # Swin-style stages halve the grid, and a stage narrower than its window breaks the
        # relative position bias: 2-patch windows on an image wide enough for the last stage.
        node["window_size"] = min(node["window_size"], 2)
        if _is_int(node.get("patch_size")) and _is_int(node.get("image_size")):
            last_stage = node["patch_size"] * 2 * 2 ** (len(depths) - 1)
            node["image_size"] = max(node["image_size"], last_stage)
    heads = node.get("num_attention_heads")
    kv_heads = node.get("num_key_value_heads")
    scales = stage_scales(node)
    for key in list(node):
        value = node[key]
        if is_config_dict(value) or (isinstance(value, list) and value and is_config_dict(value[0])):
            continue
        node[key] = _shrink_value(key, value, sizes, ids, grid, scales)
    if _is_int(heads) and _is_int(kv_heads) and kv_heads == heads:
        node["num_key_value_heads"] = node.get("num_attention_heads", HEADS)
    _shrink_experts(node)
    _shrink_layers(node)
    _rescale_rope(node)
    _fit_state_space(node)


def _shrink_value(
    key: str, value: Any, sizes: SizeMap, ids: dict[int, int], grid: tuple[int, int] | None, scales: dict[str, int]
) -> Any:
    if _SPECIAL_ID.search(key):
        if isinstance(value, list):
            return [ids.get(item, item) if _is_int(item) else item for item in value]
        return ids.get(value, value) if _is_int(value) else value
    if _is_int(value):
        return _shrink_int(key, value, sizes, grid)
    if _is_int_list(value) and len(value) <= 8:
        return _shrink_stage_list(key, value, scales.get(key, max(value)))
    return value


def _shrink_int(key: str, value: int, sizes: SizeMap, grid: tuple[int, int] | None) -> int:
    if value <= 0:
        return value
    if key == "vocab_size" or key.endswith("_vocab_size") or key == "vocab_size_per_layer_input":
        return min(value, VOCAB) if key != "type_vocab_size" else min(value, 2)
    if grid is not None and _GRID_DERIVED.search(key):
        return _follow_grid(value, grid)
    if "position" in key and "max" in key or key in {"n_positions", "n_ctx"}:
        return min(value, MAX_POSITIONS)
    if key == "max_source_positions":
        return min(value, 32)
    if key == "max_target_positions":
        return min(value, 128)
    if key in _HIDDEN_KEYS:
        return min(value, HIDDEN) if value > HIDDEN else value
    if is_intermediate_key(key):
        target = EXPERT_INTERMEDIATE if is_expert_key(key) else INTERMEDIATE
        return min(value, target)
    if is_head_dim_key(key):
        return min(value, HEAD_DIM * 2 if "lora" in key else HEAD_DIM)
    if key == "num_key_value_heads" or key.endswith("key_value_heads"):
        return min(value, KV_HEADS)
    if is_head_count_key(key):
        return min(value, HEADS)
    if key in _LAYER_COUNT_KEYS:
        return value  # cut with the per-layer lists in _shrink_layers
    if key in _GROUP_KEYS:
        return min(value, 2)
    if key in {"num_groups", "groups", "num_norm_groups"}:
        # Group norms and grouped convolutions: shrunk widths are multiples of 16.
        return min(value, 8)
    if key in {"topk_group"}:
        return 1
    if key in {"first_k_dense_replace", "num_nextn_predict_layers"}:
        return min(value, 1)
    if key in {"index_topk"}:
        return min(value, 16)
    if _NOT_A_WIDTH.search(key):
        return value
    mapped = sizes.width(value)
    if mapped is not None and _WIDTH_WORDS.search(key):
        return mapped
    if _WIDTH_WORDS.search(key) and value > SMALL_WIDTH:
        return SMALL_WIDTH
    return value


def _is_width_list(key: str, value: Any) -> bool:
    return _is_int_list(value) and len(value) <= 8 and not _NOT_A_WIDTH.search(key) and bool(_WIDTH_WORDS.search(key))


def stage_scales(node: dict[str, Any]) -> dict[str, int]:
    """Return, for each per-stage width list, the largest width among the lists that share a value with it.

    Lists that share a width are coupled (a stem's output channels are the first stage's
    input channels), so they scale by one factor.
    """
    groups: list[tuple[set[str], set[int]]] = []
    for key, value in node.items():
        if not _is_width_list(key, value):
            continue
        keys, widths = {key}, {item for item in value if item >= 8}
        for group in [group for group in groups if group[1] & widths]:
            keys |= group[0]
            widths |= group[1]
            groups.remove(group)
        groups.append((keys, widths))
    return {key: max(widths) for keys, widths in groups if widths for key in keys}


def _shrink_stage_list(key: str, value: list[int], largest: int) -> list[int]:
    """Shrink a short per-stage list: widths scale down together, depths and head counts drop.

    Widths below 8 (input channels) stay.
    """
    if key in {"depths", "blocks_per_stage", "stage_num_blocks", "stage_numb_of_layers", "layers", "num_blocks"}:
        return [min(item, 1) for item in value]
    if is_head_count_key(key) or key.endswith("heads"):
        return [min(item, 2) for item in value]
    if _NOT_A_WIDTH.search(key) or not _WIDTH_WORDS.search(key):
        return value
    if largest <= SMALL_WIDTH:
        return value
    return [item if item < 8 else max(16, 16 * round(4 * item / largest)) for item in value]


def _shrink_image(node: dict[str, Any]) -> tuple[int, int] | None:
    """Shrink image and patch sizes; return the (old, new) patch grid side when there is one."""
    image = node.get("image_size")
    patch = node.get("patch_size")
    if image is None:
        return None
    new_patch = patch
    if _is_int(patch) and patch > PATCH:
        new_patch = PATCH
    if _is_int(new_patch):
        node["patch_size"] = new_patch
    side = max(IMAGE, 4 * new_patch) if _is_int(new_patch) else IMAGE
    if _is_int(image):
        node["image_size"] = min(image, side)
    elif _is_int_list(image):
        node["image_size"] = [min(item, side) for item in image]
    else:
        return None
    if not (_is_int(patch) and _is_int(new_patch)):
        return None
    old_side = (image if _is_int(image) else image[0]) // patch
    new_side = (node["image_size"] if _is_int(node["image_size"]) else node["image_size"][0]) // new_patch
    return old_side, new_side


def _follow_grid(value: int, grid: tuple[int, int]) -> int:
    """Map a size derived from the patch grid (a side, an area, an area plus a class token) to the new grid."""
    old, new = grid
    if old <= 0:
        return value
    for extra in (0, 1):
        if value - extra == old * old:
            return new * new + extra
        if value - extra == old:
            return new + extra
    root = math.isqrt(value)
    if root * root == value and root > 0 and old % root == 0:
        pool = old // root
        return max(1, new // min(pool, new)) ** 2
    return value


def _shrink_experts(node: dict[str, Any]) -> None:
    for key in _EXPERT_COUNT_KEYS & set(node):
        if _is_int(node[key]) and node[key] > EXPERTS:
            node[key] = EXPERTS
    has_experts = any(_is_int(node.get(key)) for key in _EXPERT_COUNT_KEYS)
    for key in _ACTIVE_EXPERT_KEYS & set(node):
        if _is_int(node[key]) and node[key] > ACTIVE_EXPERTS:
            node[key] = ACTIVE_EXPERTS
        elif node[key] is None and has_experts:
            # DeepSeek-V2's default leaves it None, which torch.topk rejects.
            node[key] = ACTIVE_EXPERTS
    if _is_int(node.get("topk_group")) and _is_int(node.get("n_group")):
        node["topk_group"] = min(node["topk_group"], node["n_group"])


def _layer_kinds(node: dict[str, Any], count: int) -> list[tuple]:
    """Return each layer's kind: its entries in per-layer lists, index lists and period/offset pairs."""
    kinds: list[list[Any]] = [[] for _ in range(count)]
    for key, value in node.items():
        if isinstance(value, (list, str)) and len(value) == count and count > 1:
            if isinstance(value, str) and not _PER_LAYER_NAME.search(key):
                continue
            if isinstance(value, list) and _is_int_list(value) and not _PER_LAYER_NAME.search(key):
                continue
            for index in range(count):
                kinds[index].append((key, _hashable(value[index])))
        elif _is_int_list(value) and _LAYER_INDEX_LIST.search(key) and max(value) < count:
            members = set(value)
            for index in range(count):
                kinds[index].append((key, index in members))
    for key, value in node.items():
        if "layer" in key and _is_layer_dict(value, count):
            for index in range(count):
                kinds[index].append((key, _hashable(value.get(str(index), value.get(index)))))
    for key, period in node.items():
        if key.endswith("_period") and _is_int(period) and period > 0:
            offset = node.get(key.removesuffix("_period") + "_offset", 0)
            for index in range(count):
                kinds[index].append((key, index % period == offset))
    return [tuple(kind) for kind in kinds]


def _is_layer_dict(value: Any, count: int) -> bool:
    """Return whether ``value`` is a dict keyed by layer index (``per_layer_config``)."""
    if not isinstance(value, dict) or not value:
        return False
    keys = [str(key) for key in value]
    return all(key.isdigit() and int(key) < count for key in keys)


def _hashable(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_hashable(item) for item in value)
    if isinstance(value, dict):
        return tuple(sorted((key, _hashable(item)) for key, item in value.items()))
    return value


def _shrink_layers(node: dict[str, Any]) -> None:
    """Cut every layer count to the shortest prefix that keeps one layer of each kind."""
    for key in sorted(_LAYER_COUNT_KEYS & set(node)):
        count = node[key]
        if not _is_int(count) or count <= LAYERS:
            continue
        if _is_int_list(node.get("depths")) and len(node["depths"]) == count:
            # A stage count (Swin's num_layers): stages stay, each one block deep.
            continue
        kinds = _layer_kinds(node, count)
        first_seen: dict[tuple, int] = {}
        for index, kind in enumerate(kinds):
            first_seen.setdefault(kind, index)
        prefix = min(max(LAYERS, max(first_seen.values()) + 1), MAX_LAYERS, count)
        node[key] = prefix
        for name, value in list(node.items()):
            if isinstance(value, (list, str)) and len(value) == count and name != key:
                if isinstance(value, str) and not _PER_LAYER_NAME.search(name):
                    continue
                node[name] = value[:prefix]
            elif _is_int_list(value) and _LAYER_INDEX_LIST.search(name) and max(value) < count:
                kept = [index for index in value if index < prefix]
                node[name] = kept or [prefix - 1]
            elif "layer" in name and _is_layer_dict(value, count):
                node[name] = {key: item for key, item in value.items() if int(key) < prefix}
        if node.get("max_window_layers") is not None and _is_int(node["max_window_layers"]):
            node["max_window_layers"] = min(node["max_window_layers"], prefix)


def rotary_half(node: dict[str, Any]) -> int:
    """Return half the rotary width of a text config: head size x partial rotary factor / 2.

    Multi-head latent attention rotates ``qk_rope_head_dim`` channels only.
    """
    if _is_int(node.get("qk_rope_head_dim")):
        return max(1, node["qk_rope_head_dim"] // 2)
    head_dim = node.get("head_dim")
    if not _is_int(head_dim):
        hidden, heads = node.get("hidden_size"), node.get("num_attention_heads")
        head_dim = hidden // heads if _is_int(hidden) and _is_int(heads) and heads else HEAD_DIM
    rope = node.get("rope_parameters") if isinstance(node.get("rope_parameters"), dict) else {}
    factor = rope.get("partial_rotary_factor", node.get("partial_rotary_factor")) or 1.0
    return max(1, int(head_dim * factor) // 2)


def _rescale_rope(node: dict[str, Any]) -> None:
    """Rescale multimodal rotary sections so they still add up to half the rotary width."""
    half = rotary_half(node)
    head_dim = 2 * half
    for holder in (node, node.get("rope_parameters"), node.get("rope_scaling")):
        if not isinstance(holder, dict):
            continue
        for key in ("mrope_section", "mrope_sections", "rope_section"):
            sections = holder.get(key)
            if _is_int_list(sections) and sum(sections) != half:
                holder[key] = split_evenly(half, sections)
    if _is_int(node.get("rotary_dim")):
        node["rotary_dim"] = min(node["rotary_dim"], head_dim // 2)


def split_evenly(total: int, like: list[int]) -> list[int]:
    """Split ``total`` into len(like) positive parts in proportion to ``like``."""
    weight = sum(like)
    parts = [max(1, total * item // weight) for item in like]
    parts[-1] += total - sum(parts)
    return parts


def _fit_state_space(node: dict[str, Any]) -> None:
    """Keep Mamba-2 heads x head size equal to expand x hidden size."""
    hidden, expand = node.get("hidden_size"), node.get("mamba_expand", node.get("expand"))
    if not (_is_int(hidden) and _is_int(expand)):
        return
    inner = node.get("mamba_d_ssm") if _is_int(node.get("mamba_d_ssm")) else expand * hidden
    for heads_key, dim_key in (("mamba_num_heads", "mamba_head_dim"), ("mamba_n_heads", "mamba_d_head")):
        if _is_int(node.get(heads_key)) and dim_key in node:
            node[dim_key] = inner // node[heads_key]


def _fit_vision_feature_layers(tree: dict[str, Any]) -> None:
    """Give the vision tower enough layers for the hidden states its parent selects."""
    for node in walk(tree):
        vision = node.get("vision_config")
        if not is_config_dict(vision):
            continue
        layers = node.get("vision_feature_layer", node.get("vision_feature_layers"))
        if _is_int(layers):
            wanted = [layers]
        elif _is_int_list(layers):
            wanted = layers
        else:
            continue
        needed = max(-item if item < 0 else item + 1 for item in wanted)
        for key in _LAYER_COUNT_KEYS & set(vision):
            if _is_int(vision[key]) and vision[key] < needed:
                vision[key] = needed
