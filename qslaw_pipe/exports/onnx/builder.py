"""A small ONNX graph builder: named initializers from numpy, nodes with attributes, unique names.

g = GraphBuilder()
w = g.initializer("w", np.ones((4, 4), np.float32))
y = g.node("MatMul", ["x", w])                      # returns the output name
model = g.model("decoder", inputs, outputs, opsets={"": 21, "com.microsoft": 1})
"""

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

IR_VERSION = 10  # what onnxruntime 1.20+ reads; matches the traced graphs
TWO_GB = 2**31  # protobuf's limit: larger graphs keep their weights as external data


def uint4_tensor(name: str, values) -> TensorProto:
    """A UINT4 initializer from uint8 values in [0, 15]: two per byte, the first element in the low nibble."""
    values = np.asarray(values)
    flat = values.astype(np.uint8).reshape(-1)
    if flat.size % 2:
        flat = np.concatenate([flat, np.zeros(1, np.uint8)])
    packed = (flat[0::2] | (flat[1::2] << 4)).astype(np.uint8)
    return helper.make_tensor(name, TensorProto.UINT4, list(values.shape), packed.tobytes(), raw=True)


def make_model(graph: onnx.GraphProto, opsets: dict[str, int]) -> onnx.ModelProto:
    """helper.make_model pinned to IR_VERSION (onnx 1.23 would write IR 14, which onnxruntime <= 1.31 refuses)."""
    imports = [helper.make_opsetid(domain, version) for domain, version in opsets.items()]
    return helper.make_model(graph, opset_imports=imports, ir_version=IR_VERSION, producer_name="qslaw-pipe")


def pin_ir(model: onnx.ModelProto) -> bool:
    """Lower a model's IR version to IR_VERSION when it is newer; True when it changed."""
    if model.ir_version <= IR_VERSION:
        return False
    model.ir_version = IR_VERSION
    return True


class GraphBuilder:
    """float_type: the type of the graph's floating-point tensors (fp32, or fp16 for a half-precision decoder)."""

    def __init__(self, float_type=np.float32):
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[TensorProto] = []
        self.float_type = np.dtype(float_type)
        self._count = 0

    @property
    def onnx_float(self) -> int:
        return helper.np_dtype_to_tensor_dtype(self.float_type)

    def floating(self, name: str, value) -> str:
        """A floating-point initializer in the graph's float type."""
        return self.initializer(name, np.asarray(value, dtype=self.float_type))

    def fresh(self, stem: str) -> str:
        self._count += 1
        return f"{stem}_{self._count}"

    def initializer(self, name: str, value: np.ndarray | TensorProto) -> str:
        tensor = value if isinstance(value, TensorProto) else numpy_helper.from_array(np.asarray(value), name)
        self.initializers.append(tensor)
        return name

    def node(
        self, op: str, inputs: list[str], n_out: int = 1, domain: str = "", name: str | None = None, **attrs
    ) -> str | list[str]:
        """Add a node; returns its output name (or names when n_out > 1)."""
        stem = name or self.fresh(op)
        outputs = [f"{stem}/out{i}" for i in range(n_out)]
        self.nodes.append(helper.make_node(op, inputs, outputs, name=stem, domain=domain, **attrs))
        return outputs[0] if n_out == 1 else outputs

    def rename_output(self, produced: str, name: str) -> str:
        """Make the node that produced `produced` write `name` instead (for graph outputs)."""
        for n in reversed(self.nodes):
            for i, o in enumerate(n.output):
                if o == produced:
                    n.output[i] = name
                    return name
        raise KeyError(produced)

    def model(self, name: str, inputs, outputs, opsets: dict[str, int]) -> onnx.ModelProto:
        return make_model(helper.make_graph(self.nodes, name, inputs, outputs, self.initializers), opsets)
