"""Turn the uint8 placeholders of `qdq` exports into real UINT4 initializers (ONNX packs two per byte)."""

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper


def _uint4(tensor: onnx.TensorProto) -> onnx.TensorProto:
    values = numpy_helper.to_array(tensor).astype(np.uint8).reshape(-1)
    if values.size % 2:
        values = np.concatenate([values, np.zeros(1, np.uint8)])
    packed = (values[0::2] | (values[1::2] << 4)).astype(np.uint8)
    return onnx.helper.make_tensor(
        tensor.name, TensorProto.UINT4, list(tensor.dims), packed.tobytes(), raw=True
    )


def retype_qdq_to_uint4(path: Path) -> int:
    """Retype the weight and zero-point inputs of every DequantizeLinear with block_size; returns how many."""
    model = onnx.load(str(path))
    targets = {
        n.input[i]
        for n in model.graph.node
        if n.op_type == "DequantizeLinear" and any(a.name == "block_size" for a in n.attribute)
        for i in (0, 2)
    }
    inits = model.graph.initializer
    for i, init in enumerate(inits):
        if init.name in targets:
            inits[i].CopyFrom(_uint4(init))
    onnx.save_model(model, str(path))
    return len(targets)
