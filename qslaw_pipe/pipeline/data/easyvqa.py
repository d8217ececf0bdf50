"""easy-VQA (the `easy-vqa` package: 64x64 shape scenes) rewritten as ScienceQA-style multiple choice.

Options come from the answer's family: yes/no questions get (yes, no); shape questions get the three
shapes; colour questions get the true colour plus three others drawn with a per-question seed. The
question type (yes/no, shape, color) is kept for per-category scores.
"""

import random
from pathlib import Path

from qslaw_pipe.errors import QslawError
from qslaw_pipe.pipeline.data.sample import LETTERS, Sample, mc_prompt

YES_NO = ("yes", "no")
SHAPES = ("circle", "rectangle", "triangle")
COLOR_OPTIONS = 4


def _family(answer: str, answers: list[str]) -> tuple[str, list[str]]:
    if answer in YES_NO:
        return "yes/no", list(YES_NO)
    if answer in SHAPES:
        return "shape", list(SHAPES)
    return "color", [a for a in answers if a not in YES_NO and a not in SHAPES]


def _options(answer: str, family: list[str], rng: random.Random) -> list[str]:
    if len(family) <= COLOR_OPTIONS:
        return family
    others = rng.sample([a for a in family if a != answer], COLOR_OPTIONS - 1)
    options = others + [answer]
    rng.shuffle(options)
    return options


def easyvqa_samples(questions, answers_, image_ids, image_paths, all_answers, seed: int = 0) -> list[Sample]:
    """Pure conversion of easy-VQA's lists into multiple-choice samples."""
    samples = []
    for i, (q, a, img) in enumerate(zip(questions, answers_, image_ids, strict=True)):
        qtype, family = _family(a, all_answers)
        options = _options(a, family, random.Random(seed * 1_000_003 + i))
        prompt = mc_prompt(q[0].upper() + q[1:], options)
        meta = {"question_type": qtype, "index": i}
        samples.append(
            Sample(Path(image_paths[img]), prompt, LETTERS[options.index(a)], tuple(options), meta)
        )
    return samples


def easyvqa_module(split: str):
    """The installed `easy_vqa` package, after checking `split`; one-line errors otherwise."""
    try:
        import easy_vqa
    except ImportError as e:
        raise QslawError(
            "the easy-vqa package is not installed", "run ./install.sh (or pip install easy-vqa)"
        ) from e
    if split not in ("train", "test"):
        raise QslawError(f"easy-VQA has no split '{split}'", "use train or test")
    return easy_vqa


def load_easyvqa(split: str, seed: int = 0) -> list[Sample]:
    """The installed easy-VQA `split` ('train' or 'test') as multiple-choice samples."""
    easy_vqa = easyvqa_module(split)
    get_q = easy_vqa.get_train_questions if split == "train" else easy_vqa.get_test_questions
    get_p = easy_vqa.get_train_image_paths if split == "train" else easy_vqa.get_test_image_paths
    questions, answers_, image_ids = get_q()
    return easyvqa_samples(questions, answers_, image_ids, get_p(), easy_vqa.get_answers(), seed)
