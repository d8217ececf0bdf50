"""`qslaw-pipe generate`: greedy or sampled answer to a prompt about an image, from a model directory
or an ONNX export."""

from dataclasses import dataclass
from pathlib import Path

import click
import torch
from PIL import Image

from qslaw_pipe import cli_common as cli
from qslaw_pipe.errors import QslawError
from qslaw_pipe.pipeline.config import merge_recipe
from qslaw_pipe.pipeline.data.images import open_image
from qslaw_pipe.pipeline.device import check_placement, resolve, to_device
from qslaw_pipe.pipeline.model import LoadedModel, load_model, resolve_model
from qslaw_pipe.pipeline.prompt import chat_prompt


@dataclass(frozen=True)
class GenerateConfig:
    """temperature 0 decodes greedily."""

    max_new_tokens: int = 32
    temperature: float = 0.0
    seed: int = 0
    device: str = "auto"
    dtype: str = "auto"

    def __post_init__(self):
        check_placement(self.device, self.dtype)
        if self.max_new_tokens < 1 or self.temperature < 0:
            raise QslawError(
                "invalid --max-new-tokens/--temperature", "use max-new-tokens >= 1, temperature >= 0"
            )


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
    text = chat_prompt(lm.processor, prompt, with_image=image is not None and lm.multimodal)
    if lm.multimodal and image is not None:
        inputs = lm.processor(images=image, text=text, return_tensors="pt")
    else:
        inputs = lm.tokenizer(text, return_tensors="pt", add_special_tokens=False)
    inputs = to_device(dict(inputs), next(lm.model.parameters()).device)
    sampling = {"do_sample": True, "temperature": temperature} if temperature > 0 else {"do_sample": False}
    out = lm.model.generate(**inputs, max_new_tokens=max_new_tokens, **sampling)
    return lm.tokenizer.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True).strip()


C = GenerateConfig


@click.command("generate")
@cli.model_option
@cli.onnx_dir_option
@click.option(
    "--image", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="Image file (PNG/JPEG)."
)
@click.option("--prompt", required=True, help="The question or instruction.")
@cli.field_option(C, "max_new_tokens", "Tokens generated at most (an end token stops earlier).")
@cli.field_option(C, "temperature", "Sampling temperature; 0 decodes greedily.")
@cli.field_option(C, "seed", "Seed of the sampling.")
@cli.compute_options(C)
@cli.stage_options(force=False)
def command(model, onnx_dir, image, prompt, recipe, as_json, **flags) -> None:
    """Answer PROMPT about IMAGE with a PyTorch model directory, or an ONNX export (--onnx)."""
    cli.quiet_libraries()
    cfg = merge_recipe(GenerateConfig, recipe, flags)
    picture = open_image(image) if image else None
    if onnx_dir is not None:
        from qslaw_pipe.exports.onnx.runtime import OrtVlm
        from qslaw_pipe.pipeline.artifact import artifact_at

        artifact_at(onnx_dir, fix="pass --onnx a directory written by `qslaw-pipe export --format onnx`")

        vlm = OrtVlm(onnx_dir, device=cfg.device.partition(":")[0])
        answer = vlm.generate(prompt, picture, cfg.max_new_tokens, cfg.temperature, cfg.seed)
        cli.emit({"answer": answer, "model": str(onnx_dir), "runtime": "onnxruntime"}, as_json, answer)
        return
    compute = resolve(cfg.device, cfg.dtype)
    lm = load_model(resolve_model(model), compute.dtype, compute.device)
    answer = generate(lm, prompt, picture, cfg.max_new_tokens, cfg.temperature, cfg.seed)
    cli.emit({"answer": answer, "model": str(lm.path)}, as_json, answer)
