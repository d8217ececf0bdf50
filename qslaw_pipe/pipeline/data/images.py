"""Images: the one place a file becomes an RGB picture, with a one-line error when it is not one."""

from pathlib import Path

from PIL import Image

from qslaw_pipe.errors import QslawError


def open_image(path: Path) -> Image.Image:
    """The image at `path` as RGB; a missing or unreadable file is a QslawError naming it."""
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except (OSError, ValueError) as e:
        raise QslawError(f"cannot read image {path} ({e})", "pass a PNG or JPEG file") from e


def check_images(samples) -> None:
    """Open every distinct image of `samples` once, at load: a file that is not an image is a one-line
    error naming it here, not a crash when a training step first draws it."""
    for path in dict.fromkeys(s.image for s in samples if s.image is not None):
        try:
            with Image.open(path) as im:
                im.verify()
        except (OSError, ValueError, SyntaxError) as e:
            raise QslawError(
                f"{path} is not a readable image ({type(e).__name__})", "replace or remove that sample"
            ) from e
