"""GGUF causal LM -> ordinary fp32 Hugging Face directory (weights dequantized by transformers' GGUF reader)."""

from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer


def load_gguf(gguf_path: Path) -> tuple[torch.nn.Module, object]:
    """Load a GGUF file as an fp32 transformers model plus its tokenizer."""
    gguf_path = Path(gguf_path)
    kw = {"gguf_file": gguf_path.name}
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, **kw)
    model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, dtype=torch.float32, **kw)
    # The weights are already dequantized; drop the GGUF quantizer so save_pretrained writes plain fp32.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    return model.eval(), tokenizer


def convert_gguf(gguf_path: Path, out_dir: Path) -> Path:
    """Write the GGUF model and tokenizer as a plain HF directory at `out_dir`."""
    model, tokenizer = load_gguf(gguf_path)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return Path(out_dir)
