"""Figure helpers (vstain.figures.plotting)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from vstain.figures.plotting import add_scale_bar, draw_roi, nice_scale_length, show_image  # noqa: E402


@pytest.mark.parametrize("width, pixel, expected", [(1000, 5.0, 1000.0), (190, 5.0, 200.0), (958, 0.44, 100.0),
                                                    (64, 2.5, 50.0)])
def test_scale_length_is_round_and_near_a_quarter_of_the_width(width, pixel, expected):
    assert nice_scale_length(width, pixel) == expected


def test_scale_bar_spans_its_length_in_pixels():
    fig, ax = plt.subplots()
    ax.imshow(np.zeros((100, 400)))
    length = add_scale_bar(ax, pixel_size_um=2.0, length_um=300.0)
    (xs, _), = [line.get_data() for line in ax.lines]
    assert length == 300.0 and xs[1] - xs[0] == pytest.approx(150.0)
    assert ax.texts[0].get_text() == "300 µm"
    add_scale_bar(ax, pixel_size_um=2.0, length_um=2000.0 / 4)
    assert ax.texts[1].get_text() == "500 µm"
    with pytest.raises(ValueError, match="pixel_size_um"):
        add_scale_bar(ax, pixel_size_um=0.0)
    plt.close(fig)


def test_scale_bar_colour_contrasts_with_the_corner():
    fig, (bright, dark) = plt.subplots(1, 2)
    show_image(bright, np.full((50, 50, 3), 250, np.uint8), pixel_size_um=5.0)
    show_image(dark, np.zeros((50, 50), np.uint16), pixel_size_um=5.0)
    assert bright.lines[0].get_color() == "black" and dark.lines[0].get_color() == "white"
    draw_roi(dark, 10, 10, 20)
    assert len(dark.patches) == 1
    plt.close(fig)
