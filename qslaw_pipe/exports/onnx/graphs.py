"""The three ONNX graphs of a LLaVA-style model, as traceable wrappers.

vision.onnx   pixel_values [B, 3, H, W] -> image_features [B, n_image_tokens, hidden] (tower + projector)
embed.onnx    input_ids [B, S] int64 -> inputs_embeds [B, S, hidden]
decoder.onnx  inputs_embeds [B, S, hidden], attention_mask [B, P + S] int64, position_ids [B, S] int64,
              past.<i>.key / past.<i>.value [B, kv_heads, P, head_dim]
              -> logits [B, S, vocab], present.<i>.key / present.<i>.value [B, kv_heads, P + S, head_dim]
"""

import torch
from torch import nn
from transformers import DynamicCache


class VisionGraph(nn.Module):
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


class EmbedGraph(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.embed = model.get_input_embeddings()

    def forward(self, input_ids):
        return self.embed(input_ids)


class DecoderGraph(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.decoder, self.head = model.get_decoder(), model.get_output_embeddings()
        self.text_config = model.config.get_text_config()
        self.layers = self.text_config.num_hidden_layers

    def forward(self, inputs_embeds, attention_mask, position_ids, *past):
        cache = DynamicCache(
            ddp_cache_data=[(past[2 * i], past[2 * i + 1]) for i in range(self.layers)],
            config=self.text_config,
        )
        out = self.decoder(
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=cache,
            use_cache=True,
        )
        presents = [t for layer in out.past_key_values.layers for t in (layer.keys, layer.values)]
        return (self.head(out.last_hidden_state), *presents)


class TextGraph(DecoderGraph):
    """Embeddings + decoder on input_ids, named as optimum's ORTModelForCausalLM expects (text/model.onnx):
    input_ids, attention_mask, position_ids, past_key_values.<i>.key/value -> logits, present.<i>.key/value."""

    def __init__(self, model):
        super().__init__(model)
        self.embed = model.get_input_embeddings()

    def forward(self, input_ids, attention_mask, position_ids, *past):
        return super().forward(self.embed(input_ids), attention_mask, position_ids, *past)


def kv_names(layers: int, prefix: str) -> list[str]:
    return [f"{prefix}.{i}.{k}" for i in range(layers) for k in ("key", "value")]


def kv_shape(text_config) -> tuple[int, int]:
    """(kv_heads, head_dim)."""
    heads = text_config.num_attention_heads
    head_dim = getattr(text_config, "head_dim", None) or text_config.hidden_size // heads
    return getattr(text_config, "num_key_value_heads", heads), head_dim
