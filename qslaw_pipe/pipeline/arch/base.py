"""What a model-family adapter is (`Arch`) and the helpers every family shares.

An adapter names a family's parts by attribute path from the top model (`model.vision_tower`), never by
searching for names, and lists the processor outputs the model's forward takes beside input_ids and
attention_mask: `image_inputs` (one row per image or tile, collated by padding and concatenating) and
`token_inputs` (one value per token, like input_ids: padded with it, 0 for answer and filler tokens).
"""

import json
import operator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn


@dataclass(frozen=True)
class Arch:
    """One model family.

    name: the family as tables and errors say it; model_types: the config.model_type values it covers;
    vision: attribute path of the vision tower (None for a text-only LM); projector: attribute paths of the
    projector / connector modules or parameters between tower and LM (what tune trains beside the LM);
    image_inputs / token_inputs: see the module docstring; vision_export: the row of
    exports/onnx/vision.VISION that writes its vision graph and places its features; positions: the
    decoder's position ids, "1d" ([B, S]) or "mrope" ([3, B, S], Qwen2-VL's multimodal rotary);
    automodel: the transformers auto class that builds it."""

    name: str
    model_types: tuple[str, ...]
    vision: str | None = None
    projector: tuple[str, ...] = ()
    image_inputs: tuple[str, ...] = ()
    token_inputs: tuple[str, ...] = ()
    vision_export: str | None = None
    positions: str = "1d"
    automodel: str = "AutoModelForImageTextToText"

    @property
    def multimodal(self) -> bool:
        return self.vision is not None

    def vision_tower(self, model: nn.Module) -> nn.Module:
        return operator.attrgetter(self.vision)(model)

    def projector_parameters(self, model: nn.Module) -> dict[str, nn.Parameter]:
        """The projector's / connector's parameters by their name in `model`."""
        names = {id(p): n for n, p in model.named_parameters()}
        out = {}
        for path in self.projector:
            part = operator.attrgetter(path)(model)
            for p in part.parameters() if isinstance(part, nn.Module) else [part]:
                out[names[id(p)]] = p
        return out


def image_only(cls: type) -> type:
    """`cls` (a transformers processor) without its video processor: those need torchvision, which the
    CPU torch wheel cannot use, and no stage reads video. The family's own text and image logic is kept."""
    attributes = [a for a in cls.get_attributes() if a != "video_processor"]
    if len(attributes) == len(cls.get_attributes()):
        return cls

    return type(cls.__name__, (cls,), {"get_attributes": classmethod(lambda _c: attributes)})


def load_processor(path: Path):
    """The processor saved in `path` (image processor and tokenizer; any video processor left out)."""
    import transformers

    name = _processor_class(Path(path))
    cls = getattr(transformers, name, None) if name else None
    if cls is None:
        return transformers.AutoProcessor.from_pretrained(path, trust_remote_code=False)
    stripped = image_only(cls)
    extra = {} if stripped is cls else {"video_processor": None}
    return stripped.from_pretrained(path, trust_remote_code=False, **extra)


def _processor_class(path: Path) -> str | None:
    for name in ("processor_config.json", "preprocessor_config.json", "tokenizer_config.json"):
        f = path / name
        if f.is_file():
            value = json.loads(f.read_text(encoding="utf-8")).get("processor_class")
            if value:
                return value
    return None


def collate_images(rows: list[dict[str, torch.Tensor]], keys: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """One tensor per key from each image's processor outputs: concatenated along dim 0, every other dim
    zero-padded to the largest (a tile or patch count: the models drop all-zero padding themselves)."""
    out = {}
    for key in keys:
        parts = [r[key] for r in rows if key in r]
        if not parts:
            continue
        shape = [max(p.shape[d] for p in parts) for d in range(1, parts[0].dim())]
        padded = []
        for p in parts:
            pad = [x for d in reversed(range(1, p.dim())) for x in (0, shape[d - 1] - p.shape[d])]
            padded.append(torch.nn.functional.pad(p, pad) if any(pad) else p)
        out[key] = torch.cat(padded)
    return out
