"""`qslaw-pipe generate`: greedy or sampled answer to a prompt about an image, from a model directory
or an ONNX export."""

import torch
from PIL import Image

from qslaw_pipe.pipeline.device import to_device
from qslaw_pipe.pipeline.model import LoadedModel
from qslaw_pipe.pipeline.prompt import chat_prompt


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
