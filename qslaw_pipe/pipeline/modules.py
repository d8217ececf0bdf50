"""Finding the parts of a LLaVA-style model or causal LM by structure, not by version-specific paths."""

from torch import nn
from transformers import PreTrainedModel


def decoder(model: PreTrainedModel) -> nn.Module:
    """The language model's base decoder (embeddings, layers, final norm)."""
    return model.get_decoder()


def decoder_layers(model: PreTrainedModel) -> nn.ModuleList:
    """The decoder's block list: the ModuleList holding most parameters."""
    lists = [m for m in decoder(model).modules() if isinstance(m, nn.ModuleList)]
    return max(lists, key=lambda m: sum(p.numel() for p in m.parameters()))


def module_name(model: nn.Module, target: nn.Module) -> str:
    """Fully qualified name of `target` inside `model`."""
    for name, module in model.named_modules():
        if module is target:
            return name
    raise KeyError("module not found in model")


def vision_tower(model: PreTrainedModel) -> PreTrainedModel:
    kind = model.config.vision_config.model_type
    for module in model.modules():
        if module is not model and isinstance(module, PreTrainedModel) and module.config.model_type == kind:
            return module
    raise KeyError(f"no {kind} vision tower in model")


def projector(model: nn.Module) -> nn.Module:
    for name, module in model.named_modules():
        if name.split(".")[-1] == "multi_modal_projector":
            return module
    raise KeyError("no multi_modal_projector in model")
