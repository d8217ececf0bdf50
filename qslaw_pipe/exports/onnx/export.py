"""Export the fold artifact to ONNX: vision, embed and decoder graphs, quantized Linears as int4 ops.

The quantized Linears are rebuilt from the fold artifact's codes (int4_ops.py), so the int4 weights in
the graphs are exactly the folded ones. The directory also gets the tokenizer / processor files and
`qslaw_onnx.json` (runtime.RUNTIME_FILE), which the runtime reads.
"""

import json
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch

from qslaw_pipe.errors import QslawError
from qslaw_pipe.exports.onnx.builder import TWO_GB, pin_ir
from qslaw_pipe.exports.onnx.decoder import build_decoder, save_decoder, unsupported_reason
from qslaw_pipe.exports.onnx.graphs import (
    DecoderGraph,
    EmbedGraph,
    TextGraph,
    kv_names,
    kv_shape,
)
from qslaw_pipe.exports.onnx.int4_ops import Int4Linear, check_int4
from qslaw_pipe.exports.onnx.retype import retype_qdq_to_uint4
from qslaw_pipe.exports.onnx.runtime import RUNTIME_FILE
from qslaw_pipe.exports.onnx.vision import VISION, example_image
from qslaw_pipe.pipeline import modules
from qslaw_pipe.pipeline.folded import FoldedModel, folded_transformers, read_folded
from qslaw_pipe.pipeline.model import copy_model_files
from qslaw_pipe.pipeline.prompt import chat_prompt

OPSET = 21


def swap_int4(model: torch.nn.Module, folded: FoldedModel, op: str, accuracy_level: int) -> None:
    for name, layer in folded.layers.items():
        model.set_submodule(name, Int4Linear(layer, op, accuracy_level))


def _export(module, args, path: Path, inputs: list[str], outputs: list[str], dynamic: dict) -> None:
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            args,
            str(path),
            input_names=inputs,
            output_names=outputs,
            dynamic_axes=dynamic,
            opset_version=OPSET,
            dynamo=False,
        )


def _finish(path: Path) -> None:
    """Move weights to external data beyond 2 GB, then run the checker (path-based for large models)."""
    model = onnx.load(str(path))
    if model.ByteSize() >= TWO_GB:
        pin_ir(model)
        onnx.save_model(model, str(path), save_as_external_data=True, location=path.name + ".data")
    elif pin_ir(model):
        onnx.save_model(model, str(path))
    onnx.checker.check_model(str(path))


def export_text_model(model, tokenizer, out: Path, decoder_args: tuple, dynamic: dict) -> None:
    """text/: a text-only causal LM (model.onnx on input_ids, config.json, tokenizer) for optimum's ORTModelForCausalLM."""
    out.mkdir()
    text = model.config.get_text_config()
    layers = text.num_hidden_layers
    past = [f"past_key_values.{i}.{k}" for i in range(layers) for k in ("key", "value")]
    renamed = {
        **{k: v for k, v in dynamic.items() if not k.startswith("past.") and k != "inputs_embeds"},
        "input_ids": {0: "batch", 1: "seq"},
        "position_ids": {0: "batch", 1: "seq"},
        **{p: {0: "batch", 2: "past"} for p in past},
    }
    _export(
        TextGraph(model),
        (torch.tensor([[1, 2, 3]]), *decoder_args),
        out / "model.onnx",
        ["input_ids", "attention_mask", "position_ids", *past],
        ["logits", *kv_names(layers, "present")],
        renamed,
    )
    text.use_cache = True
    text.save_pretrained(out)
    tokenizer.save_pretrained(out)


def export_vision(model, processor, kind: str, path: Path) -> None:
    """vision.onnx of the family's kind (vision.VISION), traced on the processor's outputs for a test image."""
    vision = VISION[kind]
    enc = processor(
        images=example_image(model.config), text=chat_prompt(processor, "?", True), return_tensors="np"
    )
    inputs = vision.inputs(dict(enc), model.config)
    args = tuple(torch.from_numpy(np.ascontiguousarray(v)) for v in inputs.values())
    _export(vision.graph(model), args, path, list(inputs), list(vision.outputs), vision.dynamic)


def decoder_kind(model, requested: str) -> str:
    """'built' (decoder.py, fused onnxruntime ops) where the architecture allows, else 'traced'."""
    reason = unsupported_reason(model) if requested == "built" else None
    if reason:
        warnings.warn(f"decoder.onnx is traced, not built: {reason}", stacklevel=2)
    return "traced" if requested == "traced" or reason else "built"


def export_onnx(
    fold_dir: Path,
    out: Path,
    op: str,
    accuracy_level: int = 0,
    decoder: str = "built",
    lm_head: str = "folded",
    precision: str = "fp32",
) -> dict:
    """Write vision.onnx, embed.onnx, decoder.onnx and qslaw_onnx.json into `out`; returns a summary.

    decoder: 'built' assembles decoder.onnx from fused onnxruntime ops (decoder.py) for Llama-family
    models and falls back to 'traced' (torch.onnx.export of transformers' modules) for the others.
    lm_head: 'folded', or 'int8' / 'int8-g32' / 'int4' round-to-nearest at export (decoder.LM_HEADS; built decoder only).
    precision: fp32, or fp16 (built decoder with matmulnbits / qdq: half-precision activations and KV cache,
    fp32 logits; the vision and embed graphs stay fp32 and the runtime casts their outputs)."""
    folded = read_folded(fold_dir)
    check_int4(folded.layers, op)
    lm = folded_transformers(fold_dir, folded)
    model = lm.model
    decoder = decoder_kind(model, decoder)
    if decoder == "traced" and lm_head != "folded":
        raise QslawError(
            f"--lm-head {lm_head} needs the built decoder, and this export is traced",
            "export with --lm-head folded",
        )
    if precision != "fp32" and (decoder == "traced" or op == "custom"):
        raise QslawError(
            f"--precision {precision} needs the built decoder and an int4 op that reads {precision} activations "
            f"(this export: {decoder} decoder, --int4-op {op})",
            "export with --int4-op matmulnbits or qdq (Llama-family models), or with --precision fp32",
        )
    if decoder == "built":
        graph = build_decoder(model, folded, op, accuracy_level, lm_head, precision)
        save_decoder(graph, out / "decoder.onnx")
    for config in (model.config.get_text_config(), modules.decoder(model).config):
        config._attn_implementation = "eager"
    if op != "fp32":  # fp32: the dequantized weights as plain MatMul (a baseline for benchmarks)
        swap_int4(model, folded, op, accuracy_level)
    text = model.config.get_text_config()
    kv_heads, head_dim = kv_shape(text)
    layers = text.num_hidden_layers
    arch = lm.arch
    graphs = ["embed.onnx", "decoder.onnx", "text/model.onnx"]
    if arch.multimodal:
        export_vision(model, lm.processor, arch.vision_export, out / "vision.onnx")
        graphs.insert(0, "vision.onnx")
    _export(
        EmbedGraph(model),
        (torch.tensor([[1, 2, 3]]),),
        out / "embed.onnx",
        ["input_ids"],
        ["inputs_embeds"],
        {"input_ids": {0: "batch", 1: "seq"}, "inputs_embeds": {0: "batch", 1: "seq"}},
    )
    past = [torch.zeros(1, kv_heads, 2, head_dim) for _ in range(2 * layers)]
    positions = torch.tensor([[2, 3, 4]])
    mrope = arch.positions == "mrope"
    args = (
        torch.zeros(1, 3, text.hidden_size),
        torch.ones(1, 5, dtype=torch.long),
        positions.expand(3, 1, 3).clone() if mrope else positions,
        *past,
    )
    dynamic = {
        "inputs_embeds": {0: "batch", 1: "seq"},
        "attention_mask": {0: "batch", 1: "total"},
        "position_ids": {1: "batch", 2: "seq"} if mrope else {0: "batch", 1: "seq"},
        "logits": {0: "batch", 1: "seq"},
        **{k: {0: "batch", 2: "past"} for k in kv_names(layers, "past")},
        **{k: {0: "batch", 2: "total"} for k in kv_names(layers, "present")},
    }
    traced = [g for g in graphs if g != "decoder.onnx"]
    if decoder == "traced":
        _export(
            DecoderGraph(model),
            args,
            out / "decoder.onnx",
            ["inputs_embeds", "attention_mask", "position_ids", *kv_names(layers, "past")],
            ["logits", *kv_names(layers, "present")],
            dynamic,
        )
        traced.append("decoder.onnx")
    export_text_model(model, lm.tokenizer, out / "text", (args[1], positions, *past), dynamic)
    if op == "qdq":  # the built decoder writes UINT4 itself
        for name in traced:
            retype_qdq_to_uint4(out / name)
    for name in graphs:
        _finish(out / name)
    copy_model_files(fold_dir, out)
    runtime = {
        "int4_op": op,
        "accuracy_level": accuracy_level,
        "decoder": decoder,
        "lm_head": lm_head,
        "precision": precision,
        "layers": layers,
        "kv_heads": kv_heads,
        "head_dim": head_dim,
        "hidden_size": text.hidden_size,
        "image_token_id": getattr(model.config, "image_token_id", None),
        "eos_token_id": text.eos_token_id,
        "bits": folded.bits,
        "vision": arch.vision_export,
        "positions": arch.positions,
    }
    (out / RUNTIME_FILE).write_text(json.dumps(runtime, indent=1))
    sizes = {n: (out / n).stat().st_size for n in graphs if "/" not in n}
    return {**runtime, "bytes": sizes}
