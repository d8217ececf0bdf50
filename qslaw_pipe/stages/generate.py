"""`qslaw-pipe generate`: greedy or sampled answer to a prompt about an image, from a model directory."""

from pathlib import Path

import click
import torch
from PIL import Image

from qslaw_pipe.cli_common import emit, json_option, model_option, quiet_libraries, user_errors
from qslaw_pipe.pipeline.errors import QslawError
from qslaw_pipe.pipeline.model import LoadedModel, load_model
from qslaw_pipe.pipeline.paths import default_model_dir
from qslaw_pipe.pipeline.prompt import chat_prompt


def open_image(path: Path) -> Image.Image:
    try:
        return Image.open(path).convert("RGB")
    except (OSError, ValueError) as e:
        raise QslawError(f"cannot read image {path} ({e})", "pass a PNG or JPEG file") from e


@torch.no_grad()
def generate(
    lm: LoadedModel,
    prompt: str,
    image: Image.Image | None,
    max_new_tokens: int = 32,
    temperature: float = 0.0,
    seed: int = 0,
) -> str:
    """Decode an answer; temperature 0 is greedy."""
    torch.manual_seed(seed)
    text = chat_prompt(lm.tokenizer, prompt, with_image=image is not None and lm.multimodal)
    if lm.multimodal and image is not None:
        inputs = lm.processor(images=image, text=text, return_tensors="pt")
    else:
        inputs = lm.tokenizer(text, return_tensors="pt", add_special_tokens=False)
    sampling = {"do_sample": True, "temperature": temperature} if temperature > 0 else {"do_sample": False}
    out = lm.model.generate(**inputs, max_new_tokens=max_new_tokens, **sampling)
    return lm.tokenizer.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True).strip()


def resolve_model(model: Path | None) -> Path:
    path = model or default_model_dir()
    if not (Path(path) / "config.json").is_file():
        hint = (
            "run `qslaw-pipe prepare` first" if model is None else "pass a local Hugging Face model directory"
        )
        raise QslawError(f"no model at {path}", hint)
    return Path(path)


@click.command("generate")
@model_option
@click.option(
    "--onnx",
    "onnx_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="Run an exported ONNX directory in onnxruntime instead of a PyTorch model.",
)
@click.option(
    "--image", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="Image file (PNG/JPEG)."
)
@click.option("--prompt", required=True, help="The question or instruction.")
@click.option("--max-new-tokens", type=int, default=32, show_default=True)
@click.option("--temperature", type=float, default=0.0, show_default=True, help="0 decodes greedily.")
@click.option("--seed", type=int, default=0, show_default=True)
@json_option
@user_errors
def command(model, onnx_dir, image, prompt, max_new_tokens, temperature, seed, as_json) -> None:
    """Answer PROMPT about IMAGE with a PyTorch model directory, or an ONNX export (--onnx)."""
    quiet_libraries()
    picture = open_image(image) if image else None
    if onnx_dir is not None:
        from qslaw_pipe.exports.ort_runtime import OrtVlm

        answer = OrtVlm(onnx_dir).generate(prompt, picture, max_new_tokens, temperature, seed)
        emit({"answer": answer, "model": str(onnx_dir), "runtime": "onnxruntime"}, as_json, answer)
        return
    lm = load_model(resolve_model(model))
    answer = generate(lm, prompt, picture, max_new_tokens, temperature, seed)
    emit({"answer": answer, "model": str(lm.path)}, as_json, answer)
