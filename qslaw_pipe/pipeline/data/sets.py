"""Resolve a `--data` value to samples: `easyvqa` (multiple choice), `easyvqa-captions` (image-caption
pairs for stage-1 alignment), a ScienceQA directory, or a LLaVA JSON file."""

from pathlib import Path

from qslaw_pipe.errors import QslawError
from qslaw_pipe.pipeline.data.images import check_images
from qslaw_pipe.pipeline.data.sample import Sample


def load_samples(data: str, split: str, seed: int = 0, image_folder: str | None = None) -> list[Sample]:
    """All samples of `split` from `data` (a LLaVA JSON file has one split: the whole file; its images
    resolve inside `image_folder`, default the file's folder), every image checked to open."""
    samples = _load(data, split, seed, image_folder)
    check_images(samples)
    return samples


def _load(data: str, split: str, seed: int, image_folder: str | None) -> list[Sample]:
    if data == "easyvqa":
        from qslaw_pipe.pipeline.data.easyvqa import load_easyvqa

        return load_easyvqa(split, seed)
    if data == "easyvqa-captions":
        from qslaw_pipe.pipeline.data.captions import load_captions

        return load_captions(split)
    path = Path(data)
    if path.is_dir():
        from qslaw_pipe.pipeline.data.scienceqa import load_scienceqa

        return load_scienceqa(path, split)
    if path.is_file() and path.suffix == ".json":
        from qslaw_pipe.pipeline.data.llava_json import load_llava_json

        return load_llava_json(path, Path(image_folder) if image_folder else None)
    raise QslawError(
        f"--data {data} is neither 'easyvqa', 'easyvqa-captions', a ScienceQA directory nor a .json file",
        "pass one of those",
    )


def load_train_samples(data: str, seed: int = 0, image_folder: str | None = None) -> list[Sample]:
    """The multimodal training samples (text-only records are left to the WikiText part)."""
    samples = [s for s in load_samples(data, "train", seed, image_folder) if s.image is not None]
    if not samples:
        raise QslawError(
            f"--data {data} has no training sample with an image", "use a multimodal instruction set"
        )
    return samples
