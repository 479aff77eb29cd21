"""A real small zip of PNG images in class folders, for the upload tests (app and browser)."""
import io
import zipfile

import numpy as np
from PIL import Image


def png(colour: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    img = np.clip(rng.normal(colour, 20, (16, 16, 3)), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def image_zip(top: str = "") -> bytes:
    """3 classes (red, green, blue) x 6 PNGs, optionally wrapped in a top folder, plus a stray text file."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for c, (name, colour) in enumerate((("red", 200), ("green", 120), ("blue", 40))):
            for i in range(6):
                z.writestr(f"{top}{name}/{i}.png", png(colour, 10 * c + i))
        z.writestr(f"{top}README.txt", "not an image")
    return buf.getvalue()
