"""Chat formatting of samples: one place decides where the image token goes and where the answer starts.

The family's own chat template renders the user turn, from the processor (which transformers 5 saves as
chat_template.jinja and older versions as chat_template.json) or else the tokenizer. VLM templates take
content parts ([{"type": "image"}, {"type": "text", ...}]); text templates take a string, for which the
image token leads the question, as LLaVA does. A rendering that lost the image token or the question is
refused with one line, never used as a training or scoring input.
"""

import jinja2

from qslaw_pipe.errors import QslawError

IMAGE_TOKEN = "<image>"  # the token our default VLM's processor expands into its image features


def image_token(processor) -> str:
    """The text token a processor expands into image features (`<image>`, `<|image_pad|>`, ...)."""
    token = getattr(processor, "image_token", None)
    if not token:
        raise QslawError(
            f"{type(processor).__name__} names no image token", "use the processor the model was saved with"
        )
    return token


def chat_prompt(processor, prompt: str, with_image: bool) -> str:
    """The user turn (the image, then `prompt`) followed by the assistant header, in the model's chat
    template; `processor` is a multimodal processor or a text LM's tokenizer."""
    tokenizer = getattr(processor, "tokenizer", processor)
    token = image_token(processor) if with_image else None
    template = getattr(processor, "chat_template", None) or tokenizer.chat_template
    plain = f"{token}\n{prompt}" if with_image else prompt
    if not template:
        return f"{plain}\n"
    parts = ([{"type": "image"}] if with_image else []) + [{"type": "text", "text": prompt}]
    for content in (parts, plain) if with_image else (plain, parts):
        text = _render(tokenizer, template, content)
        if text is not None and _keeps(text, prompt, token):
            return text
    lost = "the image token or the question" if with_image else "the question"
    raise QslawError(
        f"the chat template of this model drops {lost} from a user turn",
        "give the model a chat template that renders content parts ([{type: image}, {type: text}]) or text",
    )


def _render(tokenizer, template: str, content) -> str | None:
    messages = [{"role": "user", "content": content}]
    try:
        return tokenizer.apply_chat_template(
            messages, chat_template=template, add_generation_prompt=True, tokenize=False
        )
    except (TypeError, KeyError, IndexError, AttributeError, jinja2.TemplateError):
        return None


def _keeps(text: str, prompt: str, token: str | None) -> bool:
    """The rendering holds the question once and, with an image, its token exactly once (no repr of parts)."""
    if prompt.strip() not in text or "'type'" in text:
        return False
    return token is None or text.count(token) == 1
