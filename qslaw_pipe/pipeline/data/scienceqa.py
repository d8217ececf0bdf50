"""ScienceQA in its official layout: problems.json, pid_splits.json, images/<split>/<pid>/image.png.

Each problem becomes a multiple-choice instruction in LLaVA's ScienceQA prompt style; the target is
the answer letter. Subject, context modality (IMG / TXT / NO) and grade are kept for per-category scores.
"""

import json
from pathlib import Path

from qslaw_pipe.errors import QslawError
from qslaw_pipe.pipeline.data.records import bad_record, inside, require
from qslaw_pipe.pipeline.data.sample import LETTERS, Sample, mc_prompt


def _context_modality(has_image: bool, hint: str) -> str:
    return "IMG" if has_image else ("TXT" if hint.strip() else "NO")


def _problem_sample(root: Path, path: Path, split: str, pid: str, p: dict) -> Sample:
    question = require(path, pid, p, "question", str)
    choices = require(path, pid, p, "choices", list)
    answer = require(path, pid, p, "answer", int)
    if not 0 <= answer < len(choices) <= len(LETTERS):
        raise bad_record(path, pid, "answer", f"index {answer} outside {len(choices)} choices")
    hint = p.get("hint") or ""
    image = None
    if p.get("image"):
        image = inside(root / "images", root / "images" / split / pid / str(p["image"]), path, pid, "image")
        if not image.is_file():
            raise bad_record(path, pid, "image", f"file {image} not found")
    meta = {
        "subject": p.get("subject", ""),
        "context": _context_modality(image is not None, hint),
        "grade": p.get("grade", ""),
    }
    return Sample(
        image, mc_prompt(question, [str(c) for c in choices], hint), LETTERS[answer], tuple(choices), meta
    )


def _json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise QslawError(f"{path} is not valid JSON ({type(e).__name__})", "fix the file") from e


def load_scienceqa(root: Path, split: str, image_only: bool = False) -> list[Sample]:
    """Samples of `split` ('train', 'val', 'test', ...) under the ScienceQA directory `root`."""
    root = Path(root)
    problems_path, splits_path = root / "problems.json", root / "pid_splits.json"
    for f in (problems_path, splits_path):
        if not f.is_file():
            raise QslawError(
                f"{f} not found", "pass the ScienceQA directory holding problems.json and pid_splits.json"
            )
    problems, splits = (_json(f) for f in (problems_path, splits_path))
    if split not in splits:
        raise QslawError(f"{splits_path} has no split '{split}'", f"use one of {', '.join(splits)}")
    samples = []
    for pid in splits[split]:
        if pid not in problems:
            raise bad_record(splits_path, pid, split, "pid not in problems.json")
        s = _problem_sample(root, problems_path, split, pid, problems[pid])
        if s.image is not None or not image_only:
            samples.append(s)
    return samples
