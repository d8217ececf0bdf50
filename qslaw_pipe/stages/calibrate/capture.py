"""Capture what the first decoder block receives, and run one block on cached inputs."""

import torch
from torch import nn

from qslaw_pipe.pipeline import modules


class _Stop(Exception):
    pass


@torch.no_grad()
def capture_block_inputs(model: nn.Module, batches: list[dict]) -> tuple[torch.Tensor, dict]:
    """Run `model(**batch)` until the first decoder block; return its hidden states [N, L, H] and
    the keyword arguments it got (position embeddings, masks), taken from the first batch."""
    layer0 = modules.decoder_layers(model)[0]
    hidden, kwargs = [], {}

    def hook(_module, args, kw):
        hidden.append((args[0] if args else kw["hidden_states"]).detach())
        if not kwargs:
            kwargs.update({k: v for k, v in kw.items() if k != "hidden_states"})
        raise _Stop

    handle = layer0.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        for batch in batches:
            try:
                model(**batch, use_cache=False)
            except _Stop:
                pass
    finally:
        handle.remove()
    kwargs.pop("past_key_values", None)
    kwargs["use_cache"] = False
    return torch.cat(hidden), kwargs


def run_block(block: nn.Module, hidden: torch.Tensor, kwargs: dict) -> torch.Tensor:
    out = block(hidden, **kwargs)
    return out[0] if isinstance(out, tuple) else out
