"""Multiple-choice scoring: the answer letter parsed from greedy output, accuracy overall and per category."""

import re
from collections import defaultdict

from qslaw_pipe.pipeline.data.sample import LETTERS, Sample

_LEADING = re.compile(r"^\W*(?:the answer is\s*)?\(?([A-J])(?:\W|$)", re.IGNORECASE)
CATEGORY_KEYS = ("question_type", "subject", "context", "grade")


def parse_letter(output: str, choices: tuple[str, ...]) -> str | None:
    """'B', 'B.', '(B) circle', 'The answer is B' -> 'B'; an option's exact text -> its letter; else None."""
    text = output.strip()
    m = _LEADING.match(text)
    if m and m.group(1).upper() in LETTERS[: len(choices)]:
        return m.group(1).upper()
    for i, c in enumerate(choices):
        if text.lower().rstrip(".") == c.lower():
            return LETTERS[i]
    return None


def score(samples: list[Sample], outputs: list[str]) -> dict:
    """{"accuracy", "n", "unparsed", "categories": {key: {value: {"accuracy", "n"}}}}."""
    hits, unparsed = [], 0
    by_cat: dict[str, dict[str, list[bool]]] = defaultdict(lambda: defaultdict(list))
    for s, out in zip(samples, outputs, strict=True):
        letter = parse_letter(out, s.choices)
        unparsed += letter is None
        hit = letter == s.target
        hits.append(hit)
        for key in CATEGORY_KEYS:
            if s.meta.get(key) not in (None, ""):
                by_cat[key][str(s.meta[key])].append(hit)
    cats = {
        k: {v: {"accuracy": sum(h) / len(h), "n": len(h)} for v, h in sorted(vals.items())}
        for k, vals in by_cat.items()
    }
    return {
        "accuracy": sum(hits) / max(1, len(hits)),
        "n": len(hits),
        "unparsed": unparsed,
        "categories": cats,
    }
