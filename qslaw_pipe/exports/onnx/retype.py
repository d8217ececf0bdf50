"""Turn the uint8 placeholders of traced `qdq` graphs into real UINT4 initializers (ONNX packs two per byte)."""

from pathlib import Path

import onnx
from onnx import numpy_helper

from qslaw_pipe.exports.onnx.builder import uint4_tensor
from qslaw_pipe.exports.onnx.int4_ops import INT4_OPS


def retype_qdq_to_uint4(path: Path) -> int:
    """Retype the UINT4 operands (int4_ops' qdq table row) of every blocked DequantizeLinear; returns how many."""
    model = onnx.load(str(path))
    targets = {
        n.input[i]
        for n in model.graph.node
        if n.op_type == "DequantizeLinear" and any(a.name == "block_size" for a in n.attribute)
        for i in INT4_OPS["qdq"].uint4
    }
    inits = model.graph.initializer
    for i, init in enumerate(inits):
        if init.name in targets:
            inits[i].CopyFrom(uint4_tensor(init.name, numpy_helper.to_array(init)))
    onnx.save_model(model, str(path))
    return len(targets)
