"""The one sample type every data source yields."""

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Sample:
    """One instruction example.

    image: path to an image file, or None for text-only samples.
    prompt: the user turn (no `<image>` token: the prompt formatter places it).
    target: the answer the model should produce (a letter for multiple choice; whole text for LM samples).
    choices: option texts for multiple choice, in letter order; empty otherwise.
    meta: categories for per-category scores (subject, context modality, grade, question type, ...).
    """

    image: Path | None
    prompt: str
    target: str
    choices: tuple[str, ...] = ()
    meta: dict = field(default_factory=dict)


LETTERS = "ABCDEFGHIJ"


def mc_prompt(question: str, choices: list[str], context: str = "") -> str:
    """LLaVA's ScienceQA prompt: question, context, lettered options, then the answer-format instruction."""
    lines = [question]
    if context:
        lines.append(f"Context: {context}")
    lines += [f"{LETTERS[i]}. {c}" for i, c in enumerate(choices)]
    lines.append("Answer with the option's letter from the given choices directly.")
    return "\n".join(lines)
