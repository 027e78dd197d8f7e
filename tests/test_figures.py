"""The paper's figures drawn from small arrays: Figure 1 (labels), 5 (generated-CT row), S1 and 8 (inset)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from vstain.figures.dataset import interface, new_bone_targets, plot_figure1  # noqa: E402
from vstain.figures.evaluation import (PAPER_S1_SLIDES, figure_slides, plot_rois,  # noqa: E402
                                       plot_unmasked_slides)
from vstain.figures.plotting import order_by_material, rgb_histograms  # noqa: E402
from vstain.figures.volume import plot_orthogonal_views  # noqa: E402
from vstain.pairs import RegisteredPair  # noqa: E402
from vstain.phantom import LABELS  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _mg_labels(size: int = 60) -> np.ndarray:
    """A screw disc, a degradation ring around it, two new-bone patches and bone around."""
    yy, xx = np.mgrid[:size, :size]
    radius = np.hypot(yy - size / 2, xx - size / 2)
    labels = np.full((size, size), LABELS["dense_bone"], np.uint8)
    labels[radius < 14] = LABELS["degradation_layer"]
    labels[radius < 9] = LABELS["screw"]
    labels[40:46, 40:50] = LABELS["new_bone"]  # the larger patch
    labels[8:11, 45:48] = LABELS["new_bone"]
    labels[:, :3] = LABELS["background"]
    return labels


def _boundary_by_shifts(labels: np.ndarray, inner: set[int], outer: set[int]) -> np.ndarray:
    """Inner-label pixels with an outer-label 4-neighbour, by explicit shifts (independent of scipy)."""
    inside = np.isin(labels, list(inner))
    padded = np.pad(np.isin(labels, list(outer)), 1)
    touches = padded[:-2, 1:-1] | padded[2:, 1:-1] | padded[1:-1, :-2] | padded[1:-1, 2:]
    return inside & touches


def _overlay_pixels(ax) -> np.ndarray:
    """The opaque pixels of the RGBA outline drawn over an image panel."""
    overlays = [im.get_array() for im in ax.get_images() if im.get_array().ndim == 3
                and im.get_array().shape[-1] == 4]
    assert len(overlays) == 1, "one outline overlay per panel"
    return np.asarray(overlays[0])[..., 3] > 0


def test_figure1_outlines_lie_on_the_label_boundaries_and_arrows_on_new_bone():
    labels = _mg_labels()
    rng = np.random.default_rng(0)
    histology = rng.integers(0, 256, labels.shape + (3,), dtype=np.uint8)
    ct = rng.normal(size=labels.shape).astype(np.float32)
    fig = plot_figure1(histology, ct, labels, labels, 5.0, zoom_size=20, title="tb_mg_01")
    a, b, c, d = fig.axes
    assert [ax.get_title()[:3] for ax in (a, b, c, d)] == ["(a)", "(b)", "(c)", "(d)"]

    alloy = _boundary_by_shifts(labels, {LABELS["screw"]}, {LABELS["degradation_layer"]})
    layer = _boundary_by_shifts(labels, {LABELS["degradation_layer"]},
                                {LABELS[n] for n in ("soft_tissue", "dense_bone", "new_bone", "vessel", "lacuna")})
    assert alloy.sum() > 10 and layer.sum() > 10
    np.testing.assert_array_equal(_overlay_pixels(a), alloy)
    np.testing.assert_array_equal(_overlay_pixels(b), layer)

    # the enlarged region is where the new bone is: it holds the larger patch whole
    (box,) = [p for p in a.patches if isinstance(p, Rectangle)]
    y0, x0 = int(box.get_y() + 0.5), int(box.get_x() + 0.5)
    assert box.get_width() == 20 and (labels[y0:y0 + 20, x0:x0 + 20] == LABELS["new_bone"]).sum() >= 60
    np.testing.assert_array_equal(_overlay_pixels(c), alloy[y0:y0 + 20, x0:x0 + 20])
    for ax in (c, d):
        tips = [annotation.xy for annotation in ax.texts if hasattr(annotation, "xy")]
        assert tips, "arrows at the new bone"
        for x, y in tips:
            assert labels[y0 + int(y), x0 + int(x)] == LABELS["new_bone"]


def test_figure1_needs_a_degradation_layer_and_matching_shapes():
    labels = _mg_labels()
    labels[labels == LABELS["degradation_layer"]] = LABELS["dense_bone"]
    rgb, grey = np.zeros(labels.shape + (3,), np.uint8), np.zeros(labels.shape, np.float32)
    with pytest.raises(ValueError, match="Mg sample"):
        plot_figure1(rgb, grey, labels, labels, 5.0)
    with pytest.raises(ValueError, match="one shape"):
        plot_figure1(rgb[:-1], grey, labels, labels, 5.0)


def test_interface_and_new_bone_targets():
    labels = np.zeros((4, 6), np.uint8)
    labels[:, 3:] = 2
    np.testing.assert_array_equal(np.nonzero(interface(labels, [2], [0]))[1], [3, 3, 3, 3])
    assert new_bone_targets(labels) == []
    labels[1:3, 4:6] = LABELS["new_bone"]
    (y, x), = new_bone_targets(labels)
    assert labels[y, x] == LABELS["new_bone"]


def _pair(pair_id: str = "p", material: str = "Mg", size: int = 40) -> RegisteredPair:
    rng = np.random.default_rng(1)
    ct = rng.integers(10000, 30000, (size, size)).astype(np.uint16)
    histology = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    mask = np.zeros((size, size), bool)
    mask[5:35, 5:35] = True
    return RegisteredPair(pair_id, material, "toluidine_blue", ct, histology, mask, 5.0)


def _outputs(pair: RegisteredPair, with_ct: bool = True) -> dict:
    generated = {"histology": 255 - pair.histology, "histology_masked": np.zeros_like(pair.histology)}
    if with_ct:
        generated["ct"] = (pair.ct // 2).astype(np.uint16)
        generated["ct_masked"] = np.full_like(pair.ct, 10000)
    return generated


def test_figure5_has_a_generated_ct_row_beside_the_real_ct():
    pair = _pair()
    fig = plot_rois([("train", pair, _outputs(pair), (4, 6)), ("test", pair, _outputs(pair), (10, 10))], 16)
    assert len(fig.axes) == 4 * 5  # two rows (CT, histology) per split, five columns
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[:3] == ["real CT", "generated CT", "ROI CT: real | generated"]
    assert titles[5:8] == ["real histology", "generated histology", "ROI histology: real | generated"]
    roi = fig.axes[2].get_images()[0].get_array()
    np.testing.assert_array_equal(roi, np.concatenate([pair.ct[4:20, 6:22], pair.ct[4:20, 6:22] // 2], axis=1))
    np.testing.assert_array_equal(fig.axes[1].get_images()[0].get_array(), _outputs(pair)["ct_masked"])
    # both CT panels share the real CT's grey window
    assert fig.axes[0].get_images()[0].get_clim() == fig.axes[1].get_images()[0].get_clim()


def test_figure5_without_a_reverse_generator_has_the_histology_row_only():
    pair = _pair()
    fig = plot_rois([("validation", pair, _outputs(pair, with_ct=False), (0, 0))], 16)
    assert len(fig.axes) == 5 and fig.axes[0].get_title() == "real histology"


def test_figure_s1_shows_unmasked_outputs_with_the_generated_ct():
    pairs = [_pair("a", "PEEK"), _pair("b", "Ti")]
    outputs = [_outputs(p) for p in pairs]
    fig = plot_unmasked_slides(pairs, outputs)
    assert len(fig.axes) == 4 * 2
    grid = np.array(fig.axes).reshape(4, 2)
    assert [ax.get_title() for ax in grid[0]] == ["Sample 1 = PEEK", "Sample 2 = Ti"]
    np.testing.assert_array_equal(grid[1, 1].get_images()[0].get_array(), outputs[1]["histology"])
    np.testing.assert_array_equal(grid[3, 0].get_images()[0].get_array(), outputs[0]["ct"])
    assert len(plot_unmasked_slides(pairs, [_outputs(p, with_ct=False) for p in pairs]).axes) == 3 * 2
    with pytest.raises(ValueError, match="one output per pair"):
        plot_unmasked_slides(pairs, outputs[:1])


def test_figure_s1_takes_the_papers_counts_where_the_split_has_them():
    roles = ["train"] * 7 + ["validation"] * 2 + ["test"] * 4
    materials = ["Mg", "Mg", "Mg", "Ti", "Mg", "PEEK", "Mg", "Mg", "Ti", "Mg", "PEEK", "Mg", "Mg"]
    catalogue = pd.DataFrame({"pair_id": [f"p{i:02d}" for i in range(13)], "material": materials, "role": roles})
    chosen = figure_slides(catalogue, PAPER_S1_SLIDES)
    assert {role: len(ids) for role, ids in chosen.items()} == {"train": 5, "validation": 2, "test": 3}
    assert chosen["train"][:3] == ["p00", "p03", "p05"]  # the first slide (Figure 5's) first, then Ti, PEEK
    assert chosen["test"] == ["p09", "p10", "p11"]
    assert figure_slides(catalogue, {"train": 1, "validation": 1, "test": 1}) == {
        "train": ["p00"], "validation": ["p07"], "test": ["p09"]}


def test_order_by_material_puts_one_of_each_material_first():
    materials = {"a": "Mg", "b": "Mg", "c": "Ti", "d": "PEEK", "e": "PEEK"}
    assert order_by_material(materials) == ["a", "c", "d", "b", "e"]
    assert order_by_material(materials, 2, order=("PEEK",)) == ["d", "a"]
    with pytest.raises(ValueError, match="n must be"):
        order_by_material(materials, -1)


def test_histograms_of_greyscale_rois_span_their_values():
    fig, ax = plt.subplots()
    rgb_histograms(ax, np.full((8, 8), 10000.0), np.full((8, 8), 30000.0), bins=4)
    assert len(ax.lines) == 2 and ax.get_xlim() == (10000.0, 30000.0)
    real_counts, generated_counts = (line.get_ydata() for line in ax.lines)
    assert real_counts[0] == 1.0 and generated_counts[-1] == 1.0


def test_figure8_inset_shows_the_histology_in_the_bottom_left_of_the_xy_view():
    volume = np.zeros((6, 40, 40, 3), np.uint8)
    section = np.zeros((20, 30, 3), np.uint8)
    section[..., 2] = 200
    fig = plot_orthogonal_views({"CT": volume[..., 0], "stained": volume}, (5.0, 5.0, 5.0),
                                insets={"stained": section})
    fig.canvas.draw()
    xy_ct, xy_stained = fig.axes[0], fig.axes[3]
    assert xy_ct.child_axes == [] and len(xy_stained.child_axes) == 1
    inset = xy_stained.child_axes[0]
    np.testing.assert_array_equal(inset.get_images()[0].get_array(), section)
    parent, box = xy_stained.get_position(), inset.get_position()
    assert box.x0 == pytest.approx(parent.x0, abs=1e-3) and box.y0 == pytest.approx(parent.y0, abs=1e-3)
    assert box.width < 0.5 * parent.width and box.height < 0.5 * parent.height
    with pytest.raises(ValueError, match="not shown"):
        plot_orthogonal_views({"CT": volume[..., 0]}, (5.0, 5.0, 5.0), insets={"truth": section})


def test_the_lookup_is_drawn_beside_the_models_without_ct_output_or_paper_value():
    from vstain.figures.evaluation import plot_metric_distributions, plot_models_side_by_side
    from vstain.figures.summary import plot_table1_beside_paper
    from vstain.lookup import apply_lookup, fit_lookup
    from vstain.reports.table1 import compare_with_paper
    from vstain.vocabulary import LOOKUP, MODEL_LABELS

    rng = np.random.default_rng(0)
    ct = rng.integers(10000, 30000, (48, 48)).astype(np.uint16)
    histology = np.repeat((255 - ct // 160).astype(np.uint8)[..., None], 3, axis=-1)
    mask = np.ones(ct.shape, bool)
    pair = RegisteredPair("p", "Mg", "toluidine_blue", ct, histology, mask, 5.0)
    lookup = apply_lookup(fit_lookup([ct], [histology], [mask]), ct)
    fig = plot_models_side_by_side([("test", pair, (8, 8), {"pix2pix": histology, LOOKUP: lookup})], 16)
    assert MODEL_LABELS[LOOKUP] in [ax.get_title() for ax in fig.axes]
    per_patch = pd.DataFrame({"model": ["pix2pix", LOOKUP, "raw_ct"] * 2, "role": ["test"] * 6,
                              "ssim": rng.uniform(0, 1, 6), "psnr": rng.uniform(5, 20, 6), "lpips": np.nan})
    fig = plot_metric_distributions(per_patch)
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert MODEL_LABELS[LOOKUP] in labels
    table = pd.DataFrame({"model": ["mod_cyclegan", LOOKUP], "role": ["test"] * 2, "ssim": [0.5, 0.4],
                          "lpips": [np.nan] * 2, "psnr": [14.0, 13.0], "n_patches": [4, 4], "n_pairs": [1, 1]})
    compared = compare_with_paper(table)
    assert np.isnan(compared.loc[compared.model == LOOKUP, "ssim_paper"]).all()
    fig = plot_table1_beside_paper(compared, "test")
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()][1] == MODEL_LABELS[LOOKUP]


def _browser_frames(page: str) -> tuple[list[np.ndarray], list[int]]:
    import base64
    import io
    import json
    import re

    frames = json.loads(re.search(r"var frames = (\[.*?\]);", page)[1])
    slices = json.loads(re.search(r"var slices = (\[.*?\]);", page)[1])
    images = [plt.imread(io.BytesIO(base64.b64decode(f.split(",", 1)[1])), format="png") for f in frames]
    return images, slices


def test_slice_browser_shows_each_slice_of_every_panel_side_by_side():
    from vstain.figures.volume import slice_browser_html

    depth, height, width = 9, 40, 60
    stain = np.zeros((depth, height, width, 3), np.uint8)
    stain[..., 0] = (np.arange(depth) * 20)[:, None, None]  # slice z is red 20 z
    ct = np.zeros((depth, height, width), np.float32)
    ct[:, :, width // 2:] = 1.0  # left half black, right half white on every slice
    page = slice_browser_html({"CT": ct, "virtual stain": stain}, n_frames=5, max_px=30)
    images, slices = _browser_frames(page)
    assert slices == [0, 2, 4, 6, 8] and len(images) == 5
    assert 'max="4"' in page and 'value="2"' in page and "CT | virtual stain" in page
    for image, z in zip(images, slices):
        stride = 2  # 60 px wide shown at most 30: every second pixel
        assert image.shape[:2] == (height // stride, 2 * width // stride + 4)
        pixels = np.rint(image[..., :3] * 255).astype(int)
        shown = width // stride
        assert (pixels[:, :shown // 2] == 0).all() and (pixels[:, shown // 2:shown] == 255).all()
        assert (pixels[:, width // stride:width // stride + 4] == 255).all()  # the white gap
        right = pixels[:, width // stride + 4:]
        assert (right[..., 0] == 20 * z).all() and (right[..., 1:] == 0).all()


def test_slice_browser_colours_a_map_and_refuses_panels_of_other_shapes():
    from vstain.figures.volume import slice_browser_html

    spread = np.linspace(0, 1, 3 * 4 * 5).reshape(3, 4, 5)
    images, slices = _browser_frames(slice_browser_html({"uncertainty": spread}, colormaps={"uncertainty": "magma"}))
    assert slices == [0, 1, 2]  # shallower than n_frames: every slice
    assert not np.allclose(images[2][..., 0], images[2][..., 2])  # coloured, not grey
    with pytest.raises(ValueError, match="differ in shape"):
        slice_browser_html({"a": np.zeros((3, 4, 5)), "b": np.zeros((3, 4, 6, 3), np.uint8)})
    with pytest.raises(ValueError, match="RGB panel must be uint8"):
        slice_browser_html({"a": np.zeros((3, 4, 5, 3), np.float32)})
