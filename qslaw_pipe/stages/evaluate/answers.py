"""Batched greedy answers of a PyTorch model, multimodal or text-only (left padding)."""

import torch

from qslaw_pipe.pipeline.data.images import open_image
from qslaw_pipe.pipeline.data.sample import Sample
from qslaw_pipe.pipeline.device import Compute, to_device
from qslaw_pipe.pipeline.model import LoadedModel
from qslaw_pipe.pipeline.prompt import chat_prompt


@torch.no_grad()
def greedy_answers(
    lm: LoadedModel,
    samples: list[Sample],
    max_new_tokens: int = 4,
    batch_size: int = 16,
    bar=None,
    compute: Compute | None = None,
) -> list[str]:
    """Greedy answers, batch by batch (left padding), on `compute`'s device and autocast."""
    compute = compute or Compute(torch.device("cpu"), torch.float32)
    tok = lm.tokenizer
    tok.padding_side = "left"
    outputs = []
    for i in range(0, len(samples), batch_size):
        chunk = samples[i : i + batch_size]
        seen = [s.image is not None and lm.multimodal for s in chunk]  # a text LM reads the question alone
        texts = [chat_prompt(lm.processor, s.prompt, with_image=v) for s, v in zip(chunk, seen, strict=True)]
        images = [[open_image(s.image)] for s, v in zip(chunk, seen, strict=True) if v]  # one list per prompt
        if images and len(images) != len(chunk):
            raise ValueError("a batch must be all multimodal or all text")
        kw = {"images": images} if images else {}
        enc = to_device(
            dict(lm.processor(text=texts, return_tensors="pt", padding=True, **kw)), compute.device
        )
        with compute.autocast():
            out = lm.model.generate(
                **enc, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tok.pad_token_id
            )
        outputs += [
            t.strip() for t in tok.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
        ]
        if bar is not None:
            bar.update(len(chunk))
    return outputs
