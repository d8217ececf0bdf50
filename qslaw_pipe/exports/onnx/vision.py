"""vision.onnx per model family: the traced graph, its inputs from the processor's outputs, and how the
runtime turns the graph's outputs into one feature row per image token. One row of VISION per way a family
feeds images to its LM (pipeline/arch names the row of each family):

  fixed       LLaVA: one square image -> tower (the configured layer, CLS kept or dropped) -> projector
  anyres      LLaVA-NeXT: the processor's crops of one image -> per-crop features; the runtime lays the grid
              out, unpads it to the image's aspect and appends `image_newline` (transformers' own packing)
  anyres-max  LLaVA-OneVision: the same, pooled down past its token budget (anyres_max_N)
  tiles       SmolVLM / Idefics3: the non-padding tiles -> tower (patch positions and padding mask computed
              by the runtime) -> pixel-shuffle connector
  grid        Qwen2-VL / Qwen2.5-VL: patches at the image's own resolution -> blocks (rotary positions, and
              Qwen2.5's window order, computed by the runtime) -> merger

A graph takes and returns numpy-compatible tensors only; what is computed from shapes with Python control
flow (positions, packing) is done by the runtime, so one graph serves every image size. Every function
here that the runtime calls reads only the processor's outputs and the model's config.
"""

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

Run = Callable[[dict[str, np.ndarray]], list[np.ndarray]]


@dataclass(frozen=True)
class VisionKind:
    """graph(model) -> a traceable module; inputs(enc, config) -> its named inputs from the processor's
    outputs (the batch's first image); dynamic: its dynamic axes; features(run, enc, family) -> [image
    tokens, hidden] in the order of the prompt's image tokens (family: a Family of the model's config)."""

    graph: Callable[[nn.Module], nn.Module]
    inputs: Callable[[dict, object], dict[str, np.ndarray]]
    outputs: tuple[str, ...]
    dynamic: dict
    features: Callable[[Run, dict, "Family"], np.ndarray]


def _select(hidden_states, layer, strategy: str) -> torch.Tensor:
    """LLaVA's feature selection: one hidden layer or several concatenated, the CLS token dropped ('default')."""
    chosen = (
        hidden_states[layer] if isinstance(layer, int) else torch.cat([hidden_states[i] for i in layer], -1)
    )
    return chosen[:, 1:] if strategy == "default" else chosen


class FixedGraph(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, pixel_values):
        cfg = self.model.config
        out = self.model.model.get_image_features(
            pixel_values=pixel_values,
            vision_feature_layer=cfg.vision_feature_layer,
            vision_feature_select_strategy=cfg.vision_feature_select_strategy,
        )
        return torch.stack(list(out.pooler_output))


class CropsGraph(nn.Module):
    """LLaVA-NeXT / OneVision: every crop through the tower and projector, plus the learned newline row."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, pixel_values):
        cfg, inner = self.model.config, self.model.model
        hidden = inner.vision_tower(pixel_values, output_hidden_states=True).hidden_states
        feats = inner.multi_modal_projector(
            _select(hidden, cfg.vision_feature_layer, cfg.vision_feature_select_strategy)
        )
        return feats, inner.image_newline * 1.0


def _flat(run: Run, enc: dict, family: "Family") -> np.ndarray:
    out = run({"pixel_values": enc["pixel_values"][:1].astype(np.float32)})[0]
    return out.reshape(-1, out.shape[-1])


def _crops(enc: dict, config) -> dict[str, np.ndarray]:
    return {"pixel_values": enc["pixel_values"][0].astype(np.float32)}


class Family:
    """A model's config and, made on first use, its family's transformers base model on the meta device
    (no weights): its methods that compute from the config alone (packing, M-RoPE positions) serve the runtime."""

    def __init__(self, config):
        self.config = config

    @functools.cached_property
    def meta(self) -> nn.Module:
        from transformers.models.auto.modeling_auto import MODEL_MAPPING

        with torch.device("meta"):
            return MODEL_MAPPING[type(self.config)](self.config)


def _packed(kwargs: Callable[[object], dict]) -> Callable[[Run, dict, "Family"], np.ndarray]:
    """The runtime's packing of the crops' features: the family's own pack_image_features (transformers),
    which reads only the config, called on the graph's outputs."""

    def features(run: Run, enc: dict, family: Family) -> np.ndarray:
        feats, newline = run(_crops(enc, family.config))
        packed, _ = family.meta.pack_image_features(
            [torch.from_numpy(feats)],
            torch.from_numpy(enc["image_sizes"][:1]),
            image_newline=torch.from_numpy(newline),
            **kwargs(family.config),
        )
        return (torch.cat(packed) if isinstance(packed, list | tuple) else packed).numpy()

    return features


class TilesGraph(nn.Module):
    """SmolVLM / Idefics3: tiles [N, 3, H, W] with their patch positions [N, P] and patch mask [N, P] ->
    tower -> connector [N, tokens, hidden]."""

    def __init__(self, model):
        super().__init__()
        self.vision, self.connector = model.model.vision_model, model.model.connector

    def forward(self, pixel_values, position_ids, patch_mask):
        emb = self.vision.embeddings
        x = emb.patch_embedding(pixel_values).flatten(2).transpose(1, 2) + emb.position_embedding(
            position_ids
        )
        additive = (1.0 - patch_mask.to(x.dtype))[:, None, None, :] * torch.finfo(x.dtype).min
        hidden = self.vision.encoder(inputs_embeds=x, attention_mask=additive).last_hidden_state
        return self.connector(self.vision.post_layernorm(hidden))


def tile_inputs(enc: dict, config) -> dict[str, np.ndarray]:
    """The non-padding tiles of the first image and, as the tower's embeddings compute them, each patch's
    position id (its fractional place in the tile, bucketed) and whether it holds image pixels."""
    vision = config.vision_config
    tiles = torch.from_numpy(enc["pixel_values"][0].astype(np.float32))
    masks = torch.from_numpy(np.asarray(enc["pixel_attention_mask"][0])).bool()
    real = (tiles == 0.0).sum(dim=(-1, -2, -3)) != tiles[0].numel()
    real[0] |= ~torch.any(real)
    tiles, masks = tiles[real], masks[real]
    p = vision.patch_size
    patch_mask = masks.unfold(1, p, p).unfold(2, p, p).sum(dim=(-1, -2)) > 0
    side = vision.image_size // p
    boundaries = torch.arange(1 / side, 1.0, 1 / side)
    steps_h = 1.0 / patch_mask[:, :, 0].sum(dim=1)
    steps_w = 1.0 / patch_mask[:, 0, :].sum(dim=1)
    coords_h = torch.arange(patch_mask.size(1), dtype=torch.float32)[None, :] * steps_h[:, None]
    coords_w = torch.arange(patch_mask.size(2), dtype=torch.float32)[None, :] * steps_w[:, None]
    bucket_h = torch.bucketize(torch.clamp(coords_h, max=1.0 - 1e-6), boundaries, right=True)
    bucket_w = torch.bucketize(torch.clamp(coords_w, max=1.0 - 1e-6), boundaries, right=True)
    ids = (bucket_h[:, :, None] * side + bucket_w[:, None, :]).reshape(len(tiles), -1)
    flat = patch_mask.reshape(len(tiles), -1)
    return {
        "pixel_values": tiles.numpy(),
        "position_ids": torch.where(flat, ids, 0).numpy().astype(np.int64),
        "patch_mask": flat.numpy(),
    }


def _tile_features(run: Run, enc: dict, family: "Family") -> np.ndarray:
    out = run(tile_inputs(enc, family.config))[0]
    return out.reshape(-1, out.shape[-1])


def _vision_block(block, x, cos, sin, mask):
    """A Qwen2-VL / Qwen2.5-VL vision block on one image, its attention over all patches (plus `mask`, an
    additive [N, N] window mask, or None): the family's own layers and rotary function, without the split
    by sequence bounds that tracing would freeze at the example's size."""
    import sys

    attn = block.attn
    rotary = sys.modules[type(attn).__module__].apply_rotary_pos_emb_vision
    h = block.norm1(x)
    n = h.shape[0]
    q, k, v = attn.qkv(h).reshape(n, 3, attn.num_heads, -1).permute(1, 0, 2, 3).unbind(0)
    q, k = rotary(q, k, cos, sin)
    q, k, v = (t.transpose(0, 1) for t in (q, k, v))
    scores = torch.matmul(q, k.transpose(1, 2)) * attn.scaling
    if mask is not None:
        scores = scores + mask
    out = torch.matmul(scores.softmax(-1), v).transpose(0, 1).reshape(n, -1)
    x = x + attn.proj(out)
    return x + block.mlp(block.norm2(x))


class GridGraph(nn.Module):
    """Qwen2-VL / Qwen2.5-VL on one image: patches [N, C*T*P*P] with their (h, w) position ids [N, 2] and, for
    Qwen2.5's window attention, the window order of merge units [N / m^2] and the window mask [N, N]
    -> blocks -> merger [N / m^2, hidden] (in the image's patch order)."""

    def __init__(self, model):
        super().__init__()
        self.visual = model.model.visual

    def forward(self, pixel_values, position_ids, window_index, window_mask):
        v = self.visual
        x = v.patch_embed(pixel_values)
        cos, sin = v.rotary_pos_emb(x, position_ids)
        windowed = hasattr(v, "fullatt_block_indexes")
        if windowed:
            unit = v.spatial_merge_size**2
            order = lambda t: t.reshape(-1, unit, t.shape[-1])[window_index].reshape(-1, t.shape[-1])  # noqa: E731
            x, cos, sin = order(x), order(cos), order(sin)
        for i, block in enumerate(v.blocks):
            windows = windowed and i not in v.fullatt_block_indexes
            x = _vision_block(block, x, cos, sin, window_mask if windows else None)
        merged = v.merger(x)
        return merged[torch.argsort(window_index)] if windowed else merged


def grid_inputs(enc: dict, config) -> dict[str, np.ndarray]:
    """One image's patches and what the tower computes from its grid (transformers' own vision_utils):
    the patches' position ids and, for Qwen2.5-VL, the window order and the window mask."""
    from transformers.vision_utils import get_vision_position_ids, get_vision_window_index

    vision = config.vision_config
    grid = torch.from_numpy(np.asarray(enc["image_grid_thw"][:1]))
    merge = vision.spatial_merge_size
    n = int(grid.prod())
    positions = get_vision_position_ids(grid, merge)
    mask = torch.zeros(n, n)
    if getattr(vision, "fullatt_block_indexes", None) is not None:
        index, bounds = get_vision_window_index(grid, merge, vision.window_size, vision.patch_size)
        window = torch.zeros(n, dtype=torch.long)
        window[bounds[1:-1].long()] = 1
        window = window.cumsum(0)
        mask = torch.where(window[:, None] == window[None, :], 0.0, torch.finfo(torch.float32).min)
    else:
        index = torch.arange(n // merge**2)
    return {
        "pixel_values": np.asarray(enc["pixel_values"][:n], np.float32),
        "position_ids": positions.numpy().astype(np.int64),
        "window_index": index.numpy().astype(np.int64),
        "window_mask": mask.numpy(),
    }


def _grid_features(run: Run, enc: dict, family: "Family") -> np.ndarray:
    return run(grid_inputs(enc, family.config))[0]


_PIXELS = {"pixel_values": {0: "images"}}
VISION = {
    "fixed": VisionKind(
        FixedGraph,
        lambda enc, _c: {"pixel_values": enc["pixel_values"][:1].astype(np.float32)},
        ("image_features",),
        {**_PIXELS, "image_features": {0: "images"}},
        _flat,
    ),
    "anyres": VisionKind(
        CropsGraph,
        _crops,
        ("image_features", "image_newline"),
        {"pixel_values": {0: "crops"}, "image_features": {0: "crops"}},
        _packed(lambda c: {"vision_feature_select_strategy": c.vision_feature_select_strategy}),
    ),
    "anyres-max": VisionKind(
        CropsGraph,
        _crops,
        ("image_features", "image_newline"),
        {"pixel_values": {0: "crops"}, "image_features": {0: "crops"}},
        _packed(lambda c: {"vision_aspect_ratio": c.vision_aspect_ratio}),
    ),
    "tiles": VisionKind(
        TilesGraph,
        tile_inputs,
        ("image_features",),
        {
            "pixel_values": {0: "tiles"},
            "position_ids": {0: "tiles"},
            "patch_mask": {0: "tiles"},
            "image_features": {0: "tiles"},
        },
        _tile_features,
    ),
    "grid": VisionKind(
        GridGraph,
        grid_inputs,
        ("image_features",),
        {
            "pixel_values": {0: "patches"},
            "position_ids": {0: "patches"},
            "window_index": {0: "units"},
            "window_mask": {0: "patches", 1: "patches"},
            "image_features": {0: "tokens"},
        },
        _grid_features,
    ),
}


def example_image(config):
    """A non-square test image twice the tower's input size (so anyres grids and tile splits occur)."""
    from PIL import Image

    side = getattr(config.vision_config, "image_size", None) or 224
    side = side if isinstance(side, int) else 224
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (2 * side, math.ceil(1.5 * side), 3), dtype=np.uint8)
    return Image.fromarray(pixels)
