"""Run an exported model in onnxruntime: image features (each family's way), embeddings, decoder with KV
cache, greedy or sampling; a text LM's export has no vision graph.

vlm = OrtVlm(Path("R/export-onnx"))              # CPU EP; CUDA EP when onnxruntime-gpu sees a GPU
vlm.generate("What color is the shape?", open_image("x.png"), max_new_tokens=16)

An export directory holds RUNTIME_FILE (the spec this runtime reads); graphs with our ai.qslaw ops
need the custom-op library (kernels/build.py), registered here.
"""

import json
import os
from pathlib import Path

import numpy as np
import onnxruntime as ort

from qslaw_pipe.errors import QslawError
from qslaw_pipe.exports.onnx.graphs import kv_names
from qslaw_pipe.exports.onnx.vision import VISION, Family
from qslaw_pipe.kernels.build import LIBRARY_ENV, LIBRARY_NAME, library_path
from qslaw_pipe.kernels.isa import ENV as ISA_ENV
from qslaw_pipe.kernels.isa import selected_isa, supported_isas
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
    forced = os.environ.get(ISA_ENV)
    if forced and selected_isa(path) == "unavailable":  # else every session would fail inside onnxruntime
        raise QslawError(
            f"${ISA_ENV}={forced} names no CPU kernel path this machine runs",
            f"use one of {', '.join(supported_isas(path))}, or unset ${ISA_ENV}",
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
    """An exported model in onnxruntime: vision (when the model has one), embed and decoder sessions, the
    family's processor (or a text LM's tokenizer), and its way of placing image features and position ids."""

    def __init__(self, export_dir: Path, device: str = "auto", threads: int = 0):
        from transformers import AutoConfig

        from qslaw_pipe.pipeline.arch import arch_of
        from qslaw_pipe.pipeline.model import load_model_processor

        export_dir = Path(export_dir)
        spec_path = export_dir / RUNTIME_FILE
        if not spec_path.is_file():
            raise QslawError(
                f"{spec_path} not found", "pass a directory written by `qslaw-pipe export --format onnx`"
            )
        # exports older than the families kept these values implicitly
        self.spec = {"vision": "fixed", "positions": "1d", **json.loads(spec_path.read_text())}
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        # ORT fuses blocked DequantizeLinear + MatMul into MatMulNBits; keep its accuracy level ours
        opts.add_session_config_entry(
            "session.qdq_matmulnbits_accuracy_level", str(self.spec["accuracy_level"])
        )
        if self.spec["int4_op"] == "custom":
            register_library(opts)
        prov = providers(device)
        self.decoder = ort.InferenceSession(str(export_dir / "decoder.onnx"), opts, providers=prov)
        self.vision = (
            ort.InferenceSession(str(export_dir / "vision.onnx"), opts, providers=prov)
            if self.spec["vision"]
            else None
        )
        # the embedding lookup is one Gather: no thread pool of its own, whose spinning workers would take
        # cores from the decoder's parallel matmuls every token
        single = ort.SessionOptions()
        single.intra_op_num_threads = 1
        self.embed = ort.InferenceSession(str(export_dir / "embed.onnx"), single, providers=prov)
        # the decoder's activation type (an fp16 export takes fp16 embeddings and KV cache; vision and embed are fp32)
        self.dtype = np.float16 if self.decoder.get_inputs()[0].type == "tensor(float16)" else np.float32
        config = AutoConfig.from_pretrained(export_dir, trust_remote_code=False)
        self.family = Family(config)
        self.processor = load_model_processor(export_dir, arch_of(config))
        self.tokenizer = getattr(self.processor, "tokenizer", self.processor)
        self.stop = {t for t in (self.tokenizer.eos_token_id, self.spec["eos_token_id"]) if t is not None}

    def inputs_embeds(self, input_ids: np.ndarray, inputs: dict | None = None) -> np.ndarray:
        """Token embeddings with the image features (from `inputs`, encode's processor outputs) at the
        image tokens."""
        embeds = self.embed.run(None, {"input_ids": input_ids})[0]
        if inputs and inputs.get("pixel_values") is not None:
            kind = VISION[self.spec["vision"]]
            names = {i.name for i in self.vision.get_inputs()}  # a graph drops the inputs it never reads
            run = lambda feed: self.vision.run(None, {k: v for k, v in feed.items() if k in names})  # noqa: E731
            feats = kind.features(run, inputs, self.family)
            mask = input_ids == self.spec["image_token_id"]
            if int(mask.sum()) != len(feats):
                raise QslawError(
                    f"the prompt has {int(mask.sum())} image tokens and the image {len(feats)} features",
                    "encode the prompt and image with OrtVlm.encode (the export's own processor)",
                )
            embeds[mask] = feats.astype(embeds.dtype, copy=False)
        return embeds

    def empty_past(self, batch: int) -> dict[str, np.ndarray]:
        shape = (batch, self.spec["kv_heads"], 0, self.spec["head_dim"])
        return {k: np.zeros(shape, self.dtype) for k in kv_names(self.spec["layers"], "past")}

    def prefill_positions(self, input_ids: np.ndarray, inputs: dict | None = None) -> tuple[np.ndarray, int]:
        """The prompt's position ids ([B, S], or [3, B, S] for M-RoPE) and the offset later tokens add to
        their index (M-RoPE: image tokens take fewer positions than they are long)."""
        n = input_ids.shape[1]
        if self.spec["positions"] != "mrope":
            return np.arange(n, dtype=np.int64)[None], 0
        if not inputs or inputs.get("image_grid_thw") is None:
            return np.broadcast_to(np.arange(n, dtype=np.int64), (3, 1, n)).copy(), 0
        import torch

        tensors = {
            k: torch.from_numpy(np.asarray(inputs[k])) for k in ("image_grid_thw", "mm_token_type_ids")
        }
        pos, delta = self.family.meta.get_rope_index(
            torch.from_numpy(input_ids),
            attention_mask=torch.ones(input_ids.shape, dtype=torch.long),
            **tensors,
        )
        return pos.numpy().astype(np.int64), int(delta.reshape(-1)[0])

    def next_positions(self, start: int, n: int, delta: int = 0) -> np.ndarray:
        pos = np.arange(start, start + n, dtype=np.int64)[None] + delta
        return np.broadcast_to(pos, (3, *pos.shape)).copy() if self.spec["positions"] == "mrope" else pos

    def step(
        self, embeds: np.ndarray, mask: np.ndarray, past: dict, positions: np.ndarray | None = None
    ) -> tuple[np.ndarray, dict]:
        """One decoder call: returns (logits [B, S, V], the new past); positions default to the tokens'
        indices (1-D models)."""
        start = mask.shape[1] - embeds.shape[1]
        if positions is None:
            positions = np.broadcast_to(self.next_positions(start, embeds.shape[1]), embeds.shape[:2]).copy()
        embeds = embeds.astype(
            self.dtype, copy=False
        )  # vision and embed graphs are fp32; an fp16 decoder is not
        out = self.decoder.run(
            None, {"inputs_embeds": embeds, "attention_mask": mask, "position_ids": positions, **past}
        )
        return out[0], dict(zip(kv_names(self.spec["layers"], "past"), out[1:], strict=True))

    def encode(self, prompt: str, image) -> tuple[np.ndarray, dict]:
        """(input_ids [1, S] int64, the processor's other outputs the vision graph and positions need);
        a text-only export reads the question alone."""
        with_image = image is not None and self.vision is not None
        text = chat_prompt(self.processor, prompt, with_image=with_image)
        if with_image:
            enc = dict(self.processor(images=image, text=text, return_tensors="np"))
            enc.pop("attention_mask", None)
            return enc.pop("input_ids").astype(np.int64), enc
        ids = self.tokenizer(text, return_tensors="np", add_special_tokens=False)["input_ids"]
        return ids.astype(np.int64), {}

    def generate_ids(
        self,
        input_ids: np.ndarray,
        inputs: dict | None = None,
        max_new_tokens: int = 32,
        temperature: float = 0.0,
        seed: int = 0,
    ) -> list[int]:
        """Token ids after the prompt (batch 1), stopping at an end token."""
        rng = np.random.default_rng(seed)
        embeds = self.inputs_embeds(input_ids, inputs)
        mask = np.ones((1, input_ids.shape[1]), np.int64)
        positions, delta = self.prefill_positions(input_ids, inputs)
        logits, past = self.step(embeds, mask, self.empty_past(1), positions)
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
            embed = self.embed.run(None, {"input_ids": np.array([[token]], np.int64)})[0]
            logits, past = self.step(embed, mask, past, self.next_positions(mask.shape[1] - 1, 1, delta))
        return out

    def generate(
        self, prompt: str, image=None, max_new_tokens: int = 32, temperature: float = 0.0, seed: int = 0
    ) -> str:
        ids, inputs = self.encode(prompt, image)
        return self.tokenizer.decode(
            self.generate_ids(ids, inputs, max_new_tokens, temperature, seed), skip_special_tokens=True
        ).strip()
