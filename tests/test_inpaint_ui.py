"""The painted mask: the editor's stroke layer becomes the request's mask_image (white where
painted, at the init image's size); an editor that only shows the image leaves the mask alone."""

import gradio as gr
import numpy as np
from PIL import Image

from ui.tabs.img2img import _drawn_mask


def test_strokes_become_white_on_black_at_the_init_images_size():
    background = Image.new("RGBA", (80, 64), (20, 20, 20, 255))
    stroke = Image.new("RGBA", (40, 32), (0, 0, 0, 0))  # the canvas at half the size
    stroke.paste((255, 0, 255, 255), (10, 8, 20, 16))
    mask = _drawn_mask({"background": background, "layers": [stroke], "composite": background})
    pixels = np.asarray(mask)
    assert mask.mode == "L" and mask.size == (80, 64)
    assert (pixels[16:32, 20:40] == 255).all() and pixels.sum() == 255 * 16 * 20  # only the stroke, scaled up


def test_no_stroke_layer_keeps_the_mask_and_an_erased_one_clears_it():
    background = Image.new("RGBA", (64, 64), (20, 20, 20, 255))
    kept = _drawn_mask({"background": background, "layers": [], "composite": background})
    assert kept == gr.skip()  # the mask component left as it is
    assert _drawn_mask({"background": background, "layers": [Image.new("RGBA", (64, 64))],
                        "composite": background}) is None
