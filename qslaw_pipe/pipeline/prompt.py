"""Chat formatting of samples: one place decides where the image token goes and where the answer starts."""

IMAGE_TOKEN = "<image>"


def chat_prompt(tokenizer, prompt: str, with_image: bool) -> str:
    """The user turn (image token first, as LLaVA does) followed by the assistant header."""
    content = f"{IMAGE_TOKEN}\n{prompt}" if with_image else prompt
    messages = [{"role": "user", "content": content}]
    if tokenizer.chat_template:
        return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return f"{content}\n"
