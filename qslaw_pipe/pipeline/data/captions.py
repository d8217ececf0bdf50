"""Image-caption pairs for stage-1 alignment (LLaVA's projector pre-training), made from easy-VQA's labels.

easy-VQA has no captions, but every image's questions and answers name its one shape and its colour:
"what color is the triangle?" -> blue says both. Each image becomes one sample: the prompt asks for a
short description, the target is "A blue triangle." (a part that no question names is left out).
"""

import re
from collections import defaultdict
from pathlib import Path

from qslaw_pipe.pipeline.data.sample import Sample

SHAPES = ("circle", "rectangle", "triangle")
PROMPT = "Describe the image briefly."


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z]+", text.lower()))


def label_image(qas: list[tuple[str, str]], colors: set[str]) -> tuple[str | None, str | None]:
    """(colour, shape) of one image from its (question, answer) pairs; None where no pair says."""
    color = shape = None
    for q, a in qas:
        words, positive = _words(q), "not" not in _words(q)
        if a in SHAPES:
            shape = a
            color = color or next(iter(words & colors), None)
        elif a in colors:
            color = a
            shape = shape or next(iter(words & set(SHAPES)), None)
        elif a == "yes" and positive:
            shape = shape or next(iter(words & set(SHAPES)), None)
            color = color or next(iter(words & colors), None)
    return color, shape


def caption(color: str | None, shape: str | None) -> str:
    return f"A {' '.join(w for w in (color, shape or 'shape') if w)}."


def captions_from_questions(questions, answers, image_ids, image_paths, all_answers) -> list[Sample]:
    """One caption sample per image, in image-id order (pure: easy-VQA's lists in, samples out)."""
    colors = {a for a in all_answers if a not in SHAPES and a not in ("yes", "no")}
    per_image: dict[int, list] = defaultdict(list)
    for q, a, i in zip(questions, answers, image_ids, strict=True):
        per_image[i].append((q, a))
    samples = []
    for i in sorted(per_image):
        color, shape = label_image(per_image[i], colors)
        meta = {"color": color or "", "shape": shape or "", "index": i}
        samples.append(Sample(Path(image_paths[i]), PROMPT, caption(color, shape), (), meta))
    return samples


def load_captions(split: str) -> list[Sample]:
    """easy-VQA `split` ('train' or 'test') as image-caption pairs."""
    from qslaw_pipe.pipeline.data.easyvqa import easyvqa_module

    easy_vqa = easyvqa_module(split)
    get_q = easy_vqa.get_train_questions if split == "train" else easy_vqa.get_test_questions
    get_p = easy_vqa.get_train_image_paths if split == "train" else easy_vqa.get_test_image_paths
    return captions_from_questions(*get_q(), get_p(), easy_vqa.get_answers())
