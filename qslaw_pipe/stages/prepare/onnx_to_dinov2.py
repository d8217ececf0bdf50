"""DINOv2 backbone in an ONNX file -> `transformers.Dinov2Model`, checked against onnxruntime.

Named initializers under `prefix` map 1:1 onto HF Dinov2 parameter names. Linear weights that the
exporter stored anonymously are recovered from the MatMul node that consumes them (node name
`/<prefix>/encoder/layer.3/mlp/fc1/MatMul` -> `encoder.layer.3.mlp.fc1.weight`, transposed). The
position embedding arrives as two constants, the CLS row and the patch grid, and is concatenated.
"""

import tempfile
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from safetensors.torch import save_file
from transformers import Dinov2Config, Dinov2Model

from qslaw_pipe.errors import QslawError


def _matmul_weights(graph: onnx.GraphProto, inits: dict, prefix: str) -> dict[str, np.ndarray]:
    out = {}
    head = f"/{prefix}/" if prefix else "/"
    for node in graph.node:
        if node.op_type != "MatMul" or not node.name.startswith(head) or node.input[1] not in inits:
            continue
        module = node.name[len(head) :].rsplit("/", 1)[0].replace("/", ".")
        out[f"{module}.weight"] = numpy_helper.to_array(inits[node.input[1]]).T
    return out


def _position_embeddings(inits: dict, hidden: int) -> np.ndarray:
    """The exporter splits [1, 1+N, H] into a [1, 1, H] CLS row and a [1, N, H] grid: find and join them."""
    cands = [numpy_helper.to_array(t) for n, t in inits.items() if n.startswith("onnx::")]
    cls = [a for a in cands if a.shape == (1, 1, hidden)]
    grid = [a for a in cands if a.ndim == 3 and a.shape[0] == 1 and a.shape[2] == hidden and a.shape[1] > 1]
    if len(cls) != 1 or len(grid) != 1:
        raise QslawError(
            "cannot identify DINOv2 position embeddings in the ONNX file", "export it with opset >= 14"
        )
    return np.concatenate([cls[0], grid[0]], axis=1)


def dinov2_from_onnx(onnx_path: Path, prefix: str = "backbone", head_dim: int = 64) -> Dinov2Model:
    """Build a Dinov2Model holding the ONNX file's backbone weights (config from shapes; heads = hidden / head_dim)."""
    graph = onnx.load(str(onnx_path)).graph
    inits = {t.name: t for t in graph.initializer}
    lead = f"{prefix}." if prefix else ""
    state = {n[len(lead) :]: numpy_helper.to_array(t) for n, t in inits.items() if n.startswith(lead)}
    state.update(_matmul_weights(graph, inits, prefix))
    hidden = state["embeddings.cls_token"].shape[-1]
    pos = _position_embeddings(inits, hidden)
    state["embeddings.position_embeddings"] = pos
    patch = state["embeddings.patch_embeddings.projection.weight"].shape[-1]
    layers = 1 + max(int(k.split(".")[2]) for k in state if k.startswith("encoder.layer."))
    side = int(round((pos.shape[1] - 1) ** 0.5))
    config = Dinov2Config(
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=max(1, hidden // head_dim),
        intermediate_size=state["encoder.layer.0.mlp.fc1.weight"].shape[0],
        patch_size=patch,
        image_size=side * patch,
        layerscale_value=1.0,
    )
    tensors = {k: torch.from_numpy(np.array(v, np.float32, order="C")) for k, v in state.items()}
    # Load through from_pretrained so transformers applies its own renames for checkpoint-style names.
    with tempfile.TemporaryDirectory() as tmp:
        config.save_pretrained(tmp)
        save_file(tensors, f"{tmp}/model.safetensors", metadata={"format": "pt"})
        model, info = Dinov2Model.from_pretrained(tmp, dtype=torch.float32, output_loading_info=True)
    missing = [m for m in info["missing_keys"] if "mask_token" not in m]
    if missing or info["unexpected_keys"]:
        raise QslawError(
            f"{onnx_path} does not map onto Dinov2Model (missing {missing[:3]}, unexpected {info['unexpected_keys'][:3]})",
            "pass an ONNX export of a HF Dinov2 backbone",
        )
    return model.eval()


def onnx_backbone_output(onnx_path: Path, pixels: np.ndarray, output_name: str) -> np.ndarray:
    """Run the ONNX file in onnxruntime and return an intermediate tensor (made a graph output)."""
    import onnxruntime as ort

    model = onnx.load(str(onnx_path))
    model.graph.output.append(onnx.helper.make_empty_tensor_value_info(output_name))
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    feed = {sess.get_inputs()[0].name: pixels.astype(np.float32)}
    return sess.run([output_name], feed)[0]


def layernorm_output_name(onnx_path: Path, prefix: str = "backbone") -> str:
    """Name of the tensor after the backbone's final layernorm (the node under `/<prefix>/layernorm/`)."""
    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    head = f"/{prefix}/layernorm/" if prefix else "/layernorm/"
    nodes = [n for n in graph.node if n.name.startswith(head)]
    if not nodes:
        raise QslawError(
            f"{onnx_path} has no node under {head}", "pass the backbone prefix with --vision-prefix"
        )
    return nodes[-1].output[0]


def check_against_onnxruntime(
    model: Dinov2Model, onnx_path: Path, prefix: str = "backbone", size: int = 224
) -> float:
    """Max abs difference between our Dinov2Model and onnxruntime on a random image batch."""
    pixels = np.random.default_rng(0).standard_normal((1, 3, size, size)).astype(np.float32)
    ref = onnx_backbone_output(onnx_path, pixels, layernorm_output_name(onnx_path, prefix))
    with torch.no_grad():
        ours = model(torch.from_numpy(pixels)).last_hidden_state.numpy()
    return float(np.abs(ours - ref).max())
