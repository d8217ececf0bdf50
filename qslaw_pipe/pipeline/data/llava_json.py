"""LLaVA conversation JSON: [{"image": "rel/path.png", "conversations": [{"from": "human", ...}, ...]}].

Each gpt turn becomes one sample whose prompt is the conversation before it (earlier turns joined
as plain text) and whose target is that turn. The `<image>` placeholder is removed from the text:
the prompt formatter puts the image where the model expects it.
"""

import json
from pathlib import Path

from qslaw_pipe.errors import QslawError
from qslaw_pipe.pipeline.data.records import bad_record, inside, require
from qslaw_pipe.pipeline.data.sample import Sample

_ROLES = ("human", "gpt")


def _record_samples(path: Path, image_root: Path, idx: int, rec: dict) -> list[Sample]:
    record = rec.get("id", idx) if isinstance(rec, dict) else idx
    turns = require(path, record, rec, "conversations", list)
    image = None
    if "image" in rec:
        image = inside(
            image_root, image_root / require(path, record, rec, "image", str), path, record, "image"
        )
        if not image.is_file():
            raise bad_record(path, record, "image", f"file {image} not found")
    samples, history = [], []
    for t, turn in enumerate(turns):
        who = require(path, record, turn, "from", str)
        text = require(path, record, turn, "value", str).replace("<image>", "").strip()
        if who != _ROLES[t % 2]:
            raise bad_record(
                path, record, f"conversations[{t}].from", f"expected '{_ROLES[t % 2]}', got '{who}'"
            )
        if who == "gpt":
            samples.append(Sample(image, "\n".join(history), text, (), {"source": "llava"}))
        history.append(text)
    if not samples:
        raise bad_record(path, record, "conversations", "no gpt turn")
    return samples


def load_llava_json(path: Path, image_root: Path | None = None) -> list[Sample]:
    """Samples from a LLaVA conversation file; images resolve inside `image_root` (default: its folder),
    as LLaVA's trainer's --image-folder; paths that leave it are refused."""
    path = Path(path)
    if not path.is_file():
        raise QslawError(f"{path} not found", "pass a LLaVA conversation JSON file")
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise QslawError(f"{path} is not UTF-8 text", "pass a LLaVA conversation JSON file") from e
    except json.JSONDecodeError as e:
        raise QslawError(f"{path} is not valid JSON ({e.msg} at line {e.lineno})", "fix the file") from e
    if not isinstance(records, list):
        raise QslawError(
            f"{path} holds a {type(records).__name__}, expected a list of records", "wrap records in [...]"
        )
    root = Path(image_root) if image_root else path.parent
    return [s for i, rec in enumerate(records) for s in _record_samples(path, root, i, rec)]
