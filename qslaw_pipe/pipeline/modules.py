"""Finding the parts of a multimodal model or causal LM: the decoder and its layers by structure (alike in
every family), the vision tower and projector through the family's adapter (pipeline/arch/)."""

from torch import nn
from transformers import PreTrainedModel

from qslaw_pipe.pipeline.arch import arch_of


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


def vision_tower(model: PreTrainedModel) -> nn.Module:
    """The vision tower, where the model's family adapter says it is (pipeline/arch/)."""
    return arch_of(model.config).vision_tower(model)


def projector_parameters(model: PreTrainedModel) -> dict[str, nn.Parameter]:
    """The projector's / connector's parameters by name (what tune trains beside the LM); none for a text LM."""
    return arch_of(model.config).projector_parameters(model)
