"""The fold artifact: the one canonical packed int-k format every exporter reads, as a typed record.

`R/fold/model.safetensors`, per quantized Linear `<name>`:
    <name>.qweight     uint8 [out, ceil(in / 2)]  codes, two per byte, low nibble first (kernels/pack.py);
                       for 8-bit codes uint8 [out, in] unpacked
    <name>.delta       fp32  [out, n_groups]      step per group
    <name>.zero_point  uint8 [out, n_groups]      integer zero point per group
    <name>.bias        (when the Linear has one)
every other tensor of the model under its state-dict name (vision tower, projector, embeddings, norms,
lm_head unless tied). W_q = delta * (code - zero_point) per group of `group_size` inputs along `in`.
Header: layout_version, bits, group_sizes, shapes {name: [out, in]}, packing, tied {name: source},
source (tune or calibrate), method. The directory also holds the model's config, tokenizer and
processor files, so it stands alone.

`FoldedLayer` / `FoldedModel` are the only readers and writers of this header: fold builds a
FoldedModel and `write_folded` stores it; every exporter gets one from `read_folded`.
"""

from dataclasses import dataclass
from pathlib import Path

import torch

from qslaw_pipe.errors import QslawError
from qslaw_pipe.kernels.pack import pack_int4, unpack_int4
from qslaw_pipe.kernels.quant import dequantize_codes
from qslaw_pipe.pipeline.tensors import HEADER_KEY, load_tensors, save_tensors

LAYOUT_VERSION = 1
FOLDED_FILE = "model.safetensors"
_QUANT = ("qweight", "delta", "zero_point")


@dataclass(frozen=True)
class FoldedLayer:
    """One quantized Linear: codes uint8 [out, in] (unpacked), delta fp32 and zero_point uint8
    [out, n_groups], groups of `group_size` inputs (the last may be shorter), `bits` per code."""

    codes: torch.Tensor
    delta: torch.Tensor
    zero_point: torch.Tensor
    group_size: int
    bits: int
    bias: torch.Tensor | None = None

    @property
    def shape(self) -> tuple[int, int]:
        """(out_features, in_features)."""
        return tuple(self.codes.shape)

    def dequantized(self) -> torch.Tensor:
        """W_q fp32 [out, in]."""
        return dequantize_codes(self.codes, self.delta, self.zero_point, self.group_size)

    def qweight(self) -> torch.Tensor:
        """The stored codes: two per byte for bits <= 4, else one per byte."""
        return pack_int4(self.codes) if self.bits <= 4 else self.codes


@dataclass(frozen=True)
class FoldedModel:
    """Quantized layers by module name, every other tensor by state-dict name, tied names -> their source."""

    layers: dict[str, FoldedLayer]
    tensors: dict[str, torch.Tensor]
    tied: dict[str, str]
    bits: int
    source: str
    method: str

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Every tensor of the model in fp32, quantized Linears dequantized (the folded PyTorch model)."""
        state = dict(self.tensors)
        for name, layer in self.layers.items():
            state[f"{name}.weight"] = layer.dequantized()
            if layer.bias is not None:
                state[f"{name}.bias"] = layer.bias
        for name, source in self.tied.items():
            state[name] = state[source]
        return state

    def summary(self) -> dict:
        """Bytes of the quantized Linears vs the same Linears in fp16, and of the whole artifact."""
        nbytes = lambda t: t.numel() * t.element_size()  # noqa: E731
        quant = sum(
            nbytes(q.qweight()) + nbytes(q.delta) + nbytes(q.zero_point) for q in self.layers.values()
        )
        biases = sum(nbytes(q.bias) for q in self.layers.values() if q.bias is not None)
        fp16 = sum(2 * q.codes.numel() for q in self.layers.values())
        return {
            "layers": len(self.layers),
            "quantized_bytes": quant,
            "quantized_fp16_bytes": fp16,
            "quantized_ratio": quant / fp16,
            "artifact_tensor_bytes": quant + biases + sum(nbytes(t) for t in self.tensors.values()),
        }


def write_folded(fold_dir: Path, folded: FoldedModel) -> None:
    """Store `folded` as `fold_dir/model.safetensors` (layout above)."""
    tensors = dict(folded.tensors)
    for name, q in folded.layers.items():
        tensors.update(
            {f"{name}.qweight": q.qweight(), f"{name}.delta": q.delta, f"{name}.zero_point": q.zero_point}
        )
        if q.bias is not None:
            tensors[f"{name}.bias"] = q.bias
    header = {
        "layout_version": LAYOUT_VERSION,
        "bits": folded.bits,
        "packing": "int4" if folded.bits <= 4 else "uint8",
        "group_sizes": {n: q.group_size for n, q in folded.layers.items()},
        "shapes": {n: list(q.shape) for n, q in folded.layers.items()},
        "tied": folded.tied,
        "source": folded.source,
        "method": folded.method,
    }
    save_tensors(Path(fold_dir) / FOLDED_FILE, tensors, header)


def is_folded(model_dir: Path) -> bool:
    """Whether `model_dir` holds a fold artifact (packed codes) rather than plain weights (its header says)."""
    from safetensors import safe_open

    path = Path(model_dir) / FOLDED_FILE
    if not path.is_file():
        return False
    with safe_open(str(path), framework="pt") as f:
        return "layout_version" in (f.metadata() or {}).get(HEADER_KEY, "")


def read_folded(fold_dir: Path) -> FoldedModel:
    """The fold artifact in `fold_dir`, refusing a missing file or another layout version."""
    path = Path(fold_dir) / FOLDED_FILE
    if not path.is_file():
        raise QslawError(f"{path} not found", "run `qslaw-pipe fold --run-dir R` first")
    tensors, header = load_tensors(path)
    if header.get("layout_version") != LAYOUT_VERSION:
        raise QslawError(
            f"{path} has layout version {header.get('layout_version')}, this qslaw-pipe reads {LAYOUT_VERSION}",
            "re-run `qslaw-pipe fold --force`",
        )
    layers = {}
    for name, (_, k) in header["shapes"].items():
        q = tensors.pop(f"{name}.qweight")
        layers[name] = FoldedLayer(
            unpack_int4(q, k) if header["packing"] == "int4" else q,
            tensors.pop(f"{name}.delta"),
            tensors.pop(f"{name}.zero_point"),
            header["group_sizes"][name],
            header["bits"],
            tensors.pop(f"{name}.bias", None),
        )
    return FoldedModel(
        layers, tensors, header.get("tied", {}), header["bits"], header["source"], header["method"]
    )


def folded_transformers(fold_dir: Path, folded: FoldedModel):
    """A LoadedModel (transformers, fp32, eval) whose weights are `folded` dequantized; config and
    processor (or a text LM's tokenizer) from `fold_dir`."""
    from transformers import AutoConfig

    from qslaw_pipe.pipeline.arch import arch_of
    from qslaw_pipe.pipeline.model import LoadedModel, auto_class, load_model_processor

    config = AutoConfig.from_pretrained(fold_dir, trust_remote_code=False)
    arch = arch_of(config)
    model = auto_class(arch).from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(folded.state_dict(), strict=False)
    if unexpected or [m for m in missing if not m.endswith("lm_head.weight")]:
        raise QslawError(
            f"{fold_dir} does not match its config ({(unexpected or missing)[0]})",
            "re-run `qslaw-pipe fold --force`",
        )
    model.tie_weights()
    return LoadedModel(model.eval(), load_model_processor(Path(fold_dir), arch), Path(fold_dir))


def load_folded_model(fold_dir: Path):
    """read_folded + folded_transformers."""
    return folded_transformers(fold_dir, read_folded(fold_dir))
