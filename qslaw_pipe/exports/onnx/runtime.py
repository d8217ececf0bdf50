"""Run an exported VLM in onnxruntime: image features, embeddings, decoder with KV cache, greedy or sampling.

vlm = OrtVlm(Path("R/export-onnx"))              # CPU EP; CUDA EP when onnxruntime-gpu sees a GPU
vlm.generate("What color is the shape?", open_image("x.png"), max_new_tokens=16)

An export directory holds RUNTIME_FILE (the spec this runtime reads); graphs with our ai.qslaw ops
need the custom-op library (kernels/build.py), registered here.
"""

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
from transformers import AutoProcessor

from qslaw_pipe.errors import QslawError
from qslaw_pipe.exports.onnx.graphs import kv_names
from qslaw_pipe.kernels.build import LIBRARY_ENV, LIBRARY_NAME, library_path
from qslaw_pipe.pipeline.prompt import chat_prompt

RUNTIME_FILE = "qslaw_onnx.json"


def register_library(options: ort.SessionOptions) -> Path:
    """Register the ai.qslaw custom-op library with a session's options, or say how to build it."""
    path = library_path()
    if path is None:
        raise QslawError(
            "this graph uses ai.qslaw int4 ops but their onnxruntime library is not built",
            f"build it with `python -m qslaw_pipe.kernels.build`, or set ${LIBRARY_ENV} to {LIBRARY_NAME}",
        )
    options.register_custom_ops_library(str(path))
    return path


def providers(device: str = "auto") -> list[str]:
    available = ort.get_available_providers()
    if device in ("auto", "cuda") and "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if device == "cuda":
        raise QslawError(
            "onnxruntime has no CUDA execution provider here",
            "install onnxruntime-gpu on a CUDA machine, or use --device cpu",
        )
    return ["CPUExecutionProvider"]


class OrtVlm:
    def __init__(self, export_dir: Path, device: str = "auto", threads: int = 0):
        export_dir = Path(export_dir)
        spec_path = export_dir / RUNTIME_FILE
        if not spec_path.is_file():
            raise QslawError(
                f"{spec_path} not found", "pass a directory written by `qslaw-pipe export --format onnx`"
            )
        self.spec = json.loads(spec_path.read_text())
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        # ORT fuses blocked DequantizeLinear + MatMul into MatMulNBits; keep its accuracy level ours
        opts.add_session_config_entry(
            "session.qdq_matmulnbits_accuracy_level", str(self.spec["accuracy_level"])
        )
        if self.spec["int4_op"] == "custom":
            register_library(opts)
        prov = providers(device)
        self.vision, self.decoder = (
            ort.InferenceSession(str(export_dir / f"{n}.onnx"), opts, providers=prov)
            for n in ("vision", "decoder")
        )
        # the embedding lookup is one Gather: no thread pool of its own, whose spinning workers would take
        # cores from the decoder's parallel matmuls every token
        single = ort.SessionOptions()
        single.intra_op_num_threads = 1
        self.embed = ort.InferenceSession(str(export_dir / "embed.onnx"), single, providers=prov)
        # the decoder's activation type (an fp16 export takes fp16 embeddings and KV cache; vision and embed are fp32)
        self.dtype = np.float16 if self.decoder.get_inputs()[0].type == "tensor(float16)" else np.float32
        self.processor = AutoProcessor.from_pretrained(export_dir, trust_remote_code=False)
        self.tokenizer = self.processor.tokenizer
        self.stop = {t for t in (self.tokenizer.eos_token_id, self.spec["eos_token_id"]) if t is not None}

    def inputs_embeds(self, input_ids: np.ndarray, pixel_values: np.ndarray | None) -> np.ndarray:
        embeds = self.embed.run(None, {"input_ids": input_ids})[0]
        if pixel_values is not None:
            feats = self.vision.run(None, {"pixel_values": pixel_values.astype(np.float32)})[0]
            mask = input_ids == self.spec["image_token_id"]
            embeds[mask] = feats.reshape(-1, feats.shape[-1])[: int(mask.sum())]
        return embeds

    def empty_past(self, batch: int) -> dict[str, np.ndarray]:
        shape = (batch, self.spec["kv_heads"], 0, self.spec["head_dim"])
        return {k: np.zeros(shape, self.dtype) for k in kv_names(self.spec["layers"], "past")}

    def step(self, embeds: np.ndarray, mask: np.ndarray, past: dict) -> tuple[np.ndarray, dict]:
        """One decoder call: returns (logits [B, S, V], the new past)."""
        start = mask.shape[1] - embeds.shape[1]
        pos = np.broadcast_to(np.arange(start, mask.shape[1], dtype=np.int64), embeds.shape[:2]).copy()
        embeds = embeds.astype(
            self.dtype, copy=False
        )  # vision and embed graphs are fp32; an fp16 decoder is not
        out = self.decoder.run(
            None, {"inputs_embeds": embeds, "attention_mask": mask, "position_ids": pos, **past}
        )
        return out[0], dict(zip(kv_names(self.spec["layers"], "past"), out[1:], strict=True))

    def encode(self, prompt: str, image) -> tuple[np.ndarray, np.ndarray | None]:
        text = chat_prompt(self.tokenizer, prompt, with_image=image is not None)
        if image is not None:
            enc = self.processor(images=image, text=text, return_tensors="np")
            return enc["input_ids"].astype(np.int64), enc["pixel_values"]
        return self.tokenizer(text, return_tensors="np", add_special_tokens=False)["input_ids"].astype(
            np.int64
        ), None

    def generate_ids(
        self,
        input_ids: np.ndarray,
        pixel_values=None,
        max_new_tokens: int = 32,
        temperature: float = 0.0,
        seed: int = 0,
    ) -> list[int]:
        """Token ids after the prompt (batch 1), stopping at an end token."""
        rng = np.random.default_rng(seed)
        embeds = self.inputs_embeds(input_ids, pixel_values)
        mask = np.ones((1, input_ids.shape[1]), np.int64)
        logits, past = self.step(embeds, mask, self.empty_past(1))
        out = []
        for _ in range(max_new_tokens):
            last = logits[0, -1].astype(np.float64)
            if temperature > 0:
                p = np.exp((last - last.max()) / temperature)
                token = int(rng.choice(len(p), p=p / p.sum()))
            else:
                token = int(last.argmax())
            if token in self.stop:
                break
            out.append(token)
            mask = np.ones((1, mask.shape[1] + 1), np.int64)
            logits, past = self.step(
                self.embed.run(None, {"input_ids": np.array([[token]], np.int64)})[0], mask, past
            )
        return out

    def generate(
        self, prompt: str, image=None, max_new_tokens: int = 32, temperature: float = 0.0, seed: int = 0
    ) -> str:
        ids, pixels = self.encode(prompt, image)
        return self.tokenizer.decode(
            self.generate_ids(ids, pixels, max_new_tokens, temperature, seed), skip_special_tokens=True
        ).strip()
