"""Data loaders: ScienceQA and LLaVA-JSON fixtures written here, malformed records rejected; text split."""

import pytest

from qslaw_pipe.errors import QslawError
from qslaw_pipe.pipeline.data.easyvqa import easyvqa_samples
from qslaw_pipe.pipeline.data.llava_json import load_llava_json
from qslaw_pipe.pipeline.data.scienceqa import load_scienceqa
from qslaw_pipe.pipeline.data.text import split_text, token_chunks
from tests.tiny import tiny_tokenizer, write_json, write_png


def _scienceqa(root, problems=None):
    problems = problems or {
        "1": {
            "question": "Which is a mammal?",
            "choices": ["frog", "cat"],
            "answer": 1,
            "hint": "",
            "image": "image.png",
            "subject": "natural science",
            "grade": "grade3",
            "split": "test",
        },
        "2": {
            "question": "Pick the verb.",
            "choices": ["run", "blue", "soft"],
            "answer": 0,
            "hint": "A word list.",
            "image": None,
            "subject": "language science",
            "grade": "grade2",
            "split": "test",
        },
    }
    write_json(root / "problems.json", problems)
    write_json(root / "pid_splits.json", {"test": list(problems)})
    write_png(root / "images" / "test" / "1" / "image.png")
    return root


def test_scienceqa_prompts_targets_categories(tmp_path):
    samples = load_scienceqa(_scienceqa(tmp_path), "test")
    assert [s.target for s in samples] == ["B", "A"]
    assert samples[0].image.name == "image.png" and samples[1].image is None
    assert samples[0].prompt.splitlines() == [
        "Which is a mammal?",
        "A. frog",
        "B. cat",
        "Answer with the option's letter from the given choices directly.",
    ]
    assert "Context: A word list." in samples[1].prompt
    assert [s.meta["context"] for s in samples] == ["IMG", "TXT"]
    assert samples[1].meta["subject"] == "language science" and samples[1].meta["grade"] == "grade2"
    assert len(load_scienceqa(tmp_path, "test", image_only=True)) == 1


@pytest.mark.parametrize(
    "bad, field",
    [
        ({"choices": ["a"], "answer": 0}, "question"),
        ({"question": "q", "choices": ["a", "b"], "answer": 5}, "answer"),
        ({"question": "q", "choices": "ab", "answer": 0}, "choices"),
        ({"question": "q", "choices": ["a", "b"], "answer": 0, "image": "missing.png"}, "image"),
    ],
)
def test_scienceqa_malformed_record_named(tmp_path, bad, field):
    _scienceqa(tmp_path, {"7": bad})
    with pytest.raises(QslawError, match=rf"problems.json: record '7', field '{field}'"):
        load_scienceqa(tmp_path, "test")


def test_llava_json_turns(tmp_path):
    write_png(tmp_path / "imgs" / "a.png")
    path = write_json(
        tmp_path / "conv.json",
        [
            {
                "id": "r1",
                "image": "imgs/a.png",
                "conversations": [
                    {"from": "human", "value": "<image>\nWhat is shown?"},
                    {"from": "gpt", "value": "A square."},
                    {"from": "human", "value": "What colour?"},
                    {"from": "gpt", "value": "Red."},
                ],
            },
            {
                "id": "r2",
                "conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}],
            },
        ],
    )
    samples = load_llava_json(path)
    assert [s.target for s in samples] == ["A square.", "Red.", "Hello"]
    assert samples[0].prompt == "What is shown?" and samples[0].image == tmp_path / "imgs" / "a.png"
    assert samples[1].prompt == "What is shown?\nA square.\nWhat colour?"
    assert samples[2].image is None


@pytest.mark.parametrize(
    "record, field",
    [
        ({"id": "x"}, "conversations"),
        ({"id": "x", "conversations": [{"from": "gpt", "value": "hi"}]}, r"conversations\[0\].from"),
        ({"id": "x", "conversations": [{"from": "human"}]}, "value"),
        (
            {
                "id": "x",
                "image": "nope.png",
                "conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}],
            },
            "image",
        ),
    ],
)
def test_llava_json_malformed_named(tmp_path, record, field):
    path = write_json(tmp_path / "conv.json", [record])
    with pytest.raises(QslawError, match=rf"conv.json: record 'x', field '{field}'"):
        load_llava_json(path)


def test_llava_json_not_json(tmp_path):
    path = tmp_path / "conv.json"
    path.write_text("[{oops")
    with pytest.raises(QslawError, match="not valid JSON"):
        load_llava_json(path)


def test_easyvqa_conversion_is_multiple_choice():
    answers = [
        "circle",
        "green",
        "red",
        "rectangle",
        "yes",
        "triangle",
        "no",
        "blue",
        "black",
        "gray",
        "teal",
        "brown",
        "yellow",
    ]
    samples = easyvqa_samples(
        ["what color is the shape?", "is there a circle?", "what shape is it?"],
        ["teal", "no", "triangle"],
        [0, 1, 0],
        {0: "a.png", 1: "b.png"},
        answers,
    )
    color, yn, shape = samples
    assert len(color.choices) == 4 and color.choices[ord(color.target) - 65] == "teal"
    assert yn.choices == ("yes", "no") and yn.target == "B" and yn.meta["question_type"] == "yes/no"
    assert shape.choices == ("circle", "rectangle", "triangle") and shape.target == "C"
    assert samples == easyvqa_samples(
        ["what color is the shape?", "is there a circle?", "what shape is it?"],
        ["teal", "no", "triangle"],
        [0, 1, 0],
        {0: "a.png", 1: "b.png"},
        answers,
    )


def test_text_split_and_chunks():
    text = "line one\n" * 50 + "tail\n" * 50
    calib, held = split_text(text, "calib"), split_text(text, "eval")
    assert calib + held == text and calib.endswith("\n") and abs(len(calib) - len(text) / 2) < 10
    tok = tiny_tokenizer()
    chunks = token_chunks(tok, calib, seqlen=8, limit=3)
    assert chunks.shape == (3, 8)
    with pytest.raises(QslawError, match="smaller --seqlen"):
        token_chunks(tok, "one", seqlen=64)
