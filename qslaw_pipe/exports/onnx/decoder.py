"""decoder.onnx built node by node for Llama-family decoders: a few fused onnxruntime ops per layer.

The traced decoder (torch.onnx.export of transformers' eager attention) has ~100 small nodes per layer
(mask building, rotary, repeat_kv, RMSNorm as pow/mean/sqrt), and at batch 1 those cost more than the
int4 matmuls. This graph has, per layer:

  SkipSimplifiedLayerNormalization (residual add + RMSNorm)
  qkv Linear (q/k/v fused)  ->  GroupQueryAttention (rotary, KV cache, causal, grouped heads)
  o Linear  ->  SkipSimplifiedLayerNormalization  ->  gate/up Linear (fused)  ->  SiLU(gate) * up  ->  down Linear

with the same inputs and outputs as the traced decoder (graphs.DecoderGraph), so the runtime does
not care which one it runs. Batches must be unpadded or right-padded (GroupQueryAttention reads
lengths from attention_mask); the runtime generates one sequence at a time.
"""

from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper

from qslaw_pipe.errors import QslawError
from qslaw_pipe.exports.onnx.builder import TWO_GB, GraphBuilder
from qslaw_pipe.exports.onnx.graphs import kv_names, kv_shape
from qslaw_pipe.exports.onnx.int4_ops import CUSTOM_DOMAIN
from qslaw_pipe.exports.onnx.linear import linear, linear_weights, rtn_linear
from qslaw_pipe.pipeline.folded import FoldedModel

SUPPORTED_TYPES = ("llama", "mistral", "qwen2")
# lm_head at export: as folded, or round-to-nearest codes (bits, group size) to cut the bytes read per token.
# int8-g32 is the bounded choice (its logit error and int8's: docs/results/inference.md); one int8 range per row,
# with or without a clipping search, erred more on the default VLM (the step sets the error, not outliers)
LM_HEADS = {"folded": None, "int8": (8, 128), "int8-g32": (8, 32), "int4": (4, 32)}


def unsupported_reason(model) -> str | None:
    """Why this model's decoder cannot be built (None when it can)."""
    text = model.config.get_text_config()
    if text.model_type not in SUPPORTED_TYPES:
        return f"model type {text.model_type} (built decoders: {', '.join(SUPPORTED_TYPES)})"
    if getattr(text, "hidden_act", "silu") != "silu":
        return f"activation {text.hidden_act}"
    if getattr(text, "use_sliding_window", False) or (getattr(text, "sliding_window", None) or 0) > 0:
        return "sliding-window attention"
    layer = model.get_decoder().layers[0]
    if hasattr(layer.self_attn, "q_norm"):
        return "q/k norms"
    return None


def rotary_caches(model, max_positions: int) -> tuple[np.ndarray, np.ndarray]:
    """cos, sin [max_positions, head_dim / 2] from the model's own rotary module (any rope scaling)."""
    text = model.config.get_text_config()
    _, head_dim = kv_shape(text)
    pos = torch.arange(max_positions)[None]
    cos, sin = model.get_decoder().rotary_emb(torch.zeros(1, 1, head_dim), pos)
    return cos[0, :, : head_dim // 2].numpy().copy(), sin[0, :, : head_dim // 2].numpy().copy()


def _norm_weight(g: GraphBuilder, module, stem: str) -> str:
    return g.floating(stem, module.weight.detach().float().numpy().copy())


def _eps(module) -> float:
    return float(getattr(module, "variance_epsilon", getattr(module, "eps", 1e-6)))


def _rms_norm(g: GraphBuilder, x: str, weight: str, eps: float) -> str:
    """x / sqrt(mean(x^2) + eps) * weight from standard ops (onnxruntime fuses it; the checker knows them)."""
    last = g.initializer(g.fresh("axis"), np.array([-1], np.int64))
    ms = g.node("ReduceMean", [g.node("Mul", [x, x]), last])
    eps_c = g.floating(g.fresh("eps"), np.array(eps))
    return g.node("Mul", [g.node("Div", [x, g.node("Sqrt", [g.node("Add", [ms, eps_c])])]), weight])


class _Weights:
    """Linears by module, read from the fold artifact."""

    def __init__(self, model, folded: FoldedModel):
        self.names = {id(m): n for n, m in model.named_modules()}
        self.state = model.state_dict()
        self.folded = folded

    def __call__(self, *modules):
        return [linear_weights(self.folded, self.state, self.names[id(m)]) for m in modules]


def _layer(g, i, layer, x, residual, w, op, level, attn_inputs, heads):
    """One decoder layer; returns (mlp output, residual stream) for the next layer's Skip norm."""
    eps = _eps(layer.input_layernorm)
    ln1 = _norm_weight(g, layer.input_layernorm, f"layers.{i}.ln1")
    if residual is None:
        h, residual = _rms_norm(g, x, ln1, eps), x
    else:
        h, _, _, residual = g.node(
            "SkipSimplifiedLayerNormalization", [x, residual, ln1], 4, "com.microsoft", epsilon=eps
        )
    a = layer.self_attn
    qkv = linear(g, h, w(a.q_proj, a.k_proj, a.v_proj), op, level, f"layers.{i}.qkv")
    past_k, past_v, seqlens, total, cos, sin, pos = attn_inputs
    num_heads, kv_heads = heads
    attn, _, _ = g.node(
        "GroupQueryAttention",
        [qkv, "", "", past_k, past_v, seqlens, total, cos, sin, pos],
        3,
        "com.microsoft",
        name=f"layers.{i}.attn",
        num_heads=num_heads,
        kv_num_heads=kv_heads,
        do_rotary=1,
        rotary_interleaved=0,
        scale=float(a.scaling),
    )
    g.rename_output(f"layers.{i}.attn/out1", f"present.{i}.key")
    g.rename_output(f"layers.{i}.attn/out2", f"present.{i}.value")
    o = linear(g, attn, w(a.o_proj), op, level, f"layers.{i}.o")
    ln2 = _norm_weight(g, layer.post_attention_layernorm, f"layers.{i}.ln2")
    h2, _, _, residual = g.node(
        "SkipSimplifiedLayerNormalization",
        [o, residual, ln2],
        4,
        "com.microsoft",
        epsilon=_eps(layer.post_attention_layernorm),
    )
    m = layer.mlp
    gate, up = g.node(
        "Split",
        [linear(g, h2, w(m.gate_proj, m.up_proj), op, level, f"layers.{i}.gu")],
        2,
        axis=-1,
        num_outputs=2,
    )
    act = g.node("Mul", [g.node("Mul", [gate, g.node("Sigmoid", [gate])]), up])
    return linear(g, act, w(m.down_proj), op, level, f"layers.{i}.down"), residual


def _io(text, vocab: int, f: int):
    """Graph inputs / outputs; `f`: the activations' and KV cache's type (logits are always fp32)."""
    kv_heads, head_dim = kv_shape(text)
    i64 = TensorProto.INT64
    layers = text.num_hidden_layers
    inputs = [
        helper.make_tensor_value_info("inputs_embeds", f, ["batch", "seq", text.hidden_size]),
        helper.make_tensor_value_info("attention_mask", i64, ["batch", "total"]),
        helper.make_tensor_value_info("position_ids", i64, ["batch", "seq"]),
        *(
            helper.make_tensor_value_info(n, f, ["batch", kv_heads, "past", head_dim])
            for n in kv_names(layers, "past")
        ),
    ]
    outputs = [
        helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", "seq", vocab]),
        *(
            helper.make_tensor_value_info(n, f, ["batch", kv_heads, "total", head_dim])
            for n in kv_names(layers, "present")
        ),
    ]
    return inputs, outputs


def _lengths(g: GraphBuilder) -> tuple[str, str]:
    """GroupQueryAttention's int32 lengths from attention_mask: seqlens_k = tokens seen - 1 per row, total = width."""
    one = g.initializer("one", np.array(1, np.int64))
    seen = g.node(
        "ReduceSum", ["attention_mask", g.initializer("axis1", np.array([1], np.int64))], keepdims=0
    )
    seqlens = g.node("Cast", [g.node("Sub", [seen, one])], to=TensorProto.INT32)
    width = g.node("Gather", [g.node("Shape", ["attention_mask"]), one])
    return seqlens, g.node("Cast", [width], to=TensorProto.INT32)


def head_weights(lw, lm_head: str):
    """lm_head as folded, or RTN-quantized for export ('int8' / 'int4'); refuses to re-quantize folded codes."""
    if LM_HEADS[lm_head] is None:
        return lw
    if lw.q is not None:
        raise QslawError("lm_head is already quantized in the fold artifact", "export with --lm-head folded")
    return rtn_linear(lw, *LM_HEADS[lm_head])


PRECISIONS = {"fp32": np.float32, "fp16": np.float16}


def build_decoder(
    model,
    folded: FoldedModel,
    op: str,
    accuracy_level: int = 0,
    lm_head: str = "folded",
    precision: str = "fp32",
) -> onnx.ModelProto:
    """The decoder graph of a folded model (`model`: load_folded_model(...).model, eval, fp32).
    lm_head: 'folded', or quantized at export (see LM_HEADS). precision: the activations', norms', attention's,
    KV cache's and scales' type (fp16: the CUDA EP's half-precision decoder; int4 codes unchanged); the
    logits are fp32 either way."""
    text = model.config.get_text_config()
    decoder, head = model.get_decoder(), model.get_output_embeddings()
    g, w = GraphBuilder(PRECISIONS[precision]), _Weights(model, folded)
    seqlens, total = _lengths(g)
    cos, sin = rotary_caches(model, text.max_position_embeddings)
    cos, sin = g.floating("rotary.cos", cos), g.floating("rotary.sin", sin)
    heads = (text.num_attention_heads, kv_shape(text)[0])
    x, residual = "inputs_embeds", None
    for i, layer in enumerate(decoder.layers):
        attn_inputs = (f"past.{i}.key", f"past.{i}.value", seqlens, total, cos, sin, "position_ids")
        x, residual = _layer(g, i, layer, x, residual, w, op, accuracy_level, attn_inputs, heads)
    final = _norm_weight(g, decoder.norm, "norm")
    h, _, _, _ = g.node(
        "SkipSimplifiedLayerNormalization",
        [x, residual, final],
        4,
        "com.microsoft",
        epsilon=_eps(decoder.norm),
    )
    head_op = "matmulnbits" if op == "fp32" and lm_head != "folded" else op
    logits = linear(g, h, [head_weights(w(head)[0], lm_head)], head_op, accuracy_level, "lm_head")
    if g.float_type != np.float32:
        logits = g.node("Cast", [logits], to=TensorProto.FLOAT)
    g.rename_output(logits, "logits")
    opsets = {"": 21, "com.microsoft": 1, **({CUSTOM_DOMAIN: 1} if op == "custom" else {})}
    return g.model("decoder", *_io(text, head.weight.shape[0], g.onnx_float), opsets)


def save_decoder(model_proto: onnx.ModelProto, path: Path) -> None:
    """Save, with weights as external data when the graph would pass protobuf's 2 GB limit."""
    if sum(len(t.raw_data) for t in model_proto.graph.initializer) >= TWO_GB - 2**26:
        onnx.save_model(model_proto, str(path), save_as_external_data=True, location=path.name + ".data")
    else:
        onnx.save_model(model_proto, str(path))
