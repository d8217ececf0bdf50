"""The language side's ONNX graphs, as traceable wrappers (vision.onnx: vision.py, one row per family).

embed.onnx    input_ids [B, S] int64 -> inputs_embeds [B, S, hidden]
decoder.onnx  inputs_embeds [B, S, hidden], attention_mask [B, P + S] int64, position_ids [B, S] int64
              ([3, B, S] for M-RoPE decoders),
              past.<i>.key / past.<i>.value [B, kv_heads, P, head_dim]
              -> logits [B, S, vocab], present.<i>.key / present.<i>.value [B, kv_heads, P + S, head_dim]
"""

from torch import nn
from transformers import DynamicCache


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
