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
