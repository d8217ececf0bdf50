"""Tiny models and files built from config inside the tests: no downloads."""

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import Dinov2Config, Dinov2Model, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

CORPUS = [
    "the quick brown fox jumps over the lazy dog. what is the red shape? a circle, a triangle.",
    "answer with the option's letter from the given choices directly. yes no blue green gray.",
] * 20
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHAT_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def tiny_tokenizer(vocab_size: int = 300) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(CORPUS, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token="<|endoftext|>",
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def tiny_llama(vocab_size: int, seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=True,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    return LlamaForCausalLM(cfg).eval()


def tiny_dinov2(seed: int = 0) -> Dinov2Model:
    torch.manual_seed(seed)
    cfg = Dinov2Config(
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=1,
        intermediate_size=128,
        patch_size=14,
        image_size=56,
    )
    model = Dinov2Model(cfg).eval()
    with torch.no_grad():  # random norms and biases, so the ONNX exporter keeps every initializer distinct
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return model


def tiny_llava(out: Path, image_size: int = 28, seed: int = 0) -> Path:
    """A 2-layer LLaVA (LM hidden 64, vision hidden 64) saved with its processor at `out`."""
    from qslaw_pipe.stages.prepare.assemble import assemble_llava

    tok = tiny_tokenizer()
    model, processor = assemble_llava(
        tiny_llama(len(tok) + 1, seed), tiny_dinov2(seed), tok, image_size, seed
    )
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


def write_png(path: Path, color=(255, 0, 0), size: int = 32) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.zeros((size, size, 3), dtype=np.uint8)
    arr[size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = color
    Image.fromarray(arr).save(path)
    return path


def write_json(path: Path, obj) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))
    return path


COLORS = {"red": (255, 0, 0), "blue": (0, 0, 255), "green": (0, 255, 0)}


def tiny_scienceqa(root: Path, per_split: dict[str, int] | None = None) -> Path:
    """A ScienceQA-layout set of colour questions on solid-square images, known answers, for train and test."""
    per_split = per_split or {"train": 12, "test": 6}
    problems, splits = {}, {}
    names = list(COLORS)
    for split, n in per_split.items():
        splits[split] = []
        for i in range(n):
            pid = f"{split}{i}"
            color = names[i % len(names)]
            write_png(root / "images" / split / pid / "image.png", COLORS[color], size=28)
            problems[pid] = {
                "question": "What color is the square?",
                "choices": names,
                "answer": names.index(color),
                "hint": "",
                "image": "image.png",
                "subject": "natural science",
                "grade": f"grade{1 + i % 2}",
            }
            splits[split].append(pid)
    write_json(root / "problems.json", problems)
    write_json(root / "pid_splits.json", splits)
    return root
