"""Schematic figures drawn by code: the study's pipeline (in the spirit of the paper's Figure 2).

Examples
--------
>>> import matplotlib
>>> matplotlib.use("Agg")
>>> fig = draw_pipeline()
>>> len(fig.axes)
1
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

from vstain.io import atomic_path

# (row, column, title, detail, module) of each box; rows are the two halves of Figure 2:
# acquisition and pairing on top, learning and application below.
PIPELINE_STEPS = (
    (0, 0, "Bone-implant block", "Mg / Ti / PEEK screw\nin bone (phantom)", "vstain.phantom"),
    (0, 1, "X-ray micro-CT", "3D greyscale volume\nbone bright", "vstain.phantom"),
    (0, 2, "Histology section", "toluidine blue / H&E\ncut after the CT", "vstain.phantom"),
    (0, 3, "2D-3D registration", "oblique plane by MI,\nthen 2D affine", "vstain.registration"),
    (1, 3, "Normalise + mask", "bone/background levels,\ncorrespondence mask", "vstain.normalise"),
    (1, 2, "Paired training", "patches + augmentation,\n4 models x 5 folds", "vstain.train"),
    (1, 1, "Whole-slide inference", "overlapping patches,\nSSIM / PSNR / LPIPS", "vstain.infer"),
    (1, 0, "3D virtual staining", "slice-wise generation\nof the CT volume", "vstain.volume"),
)


def draw_pipeline(figsize: tuple[float, float] = (11.0, 4.2)) -> Figure:
    """Draw the study's pipeline as boxes (one per stage, naming its module) and arrows.

    Returns
    -------
    matplotlib.figure.Figure
    """
    fig, ax = plt.subplots(figsize=figsize)
    ax.set_xlim(-0.1, 4.0)
    ax.set_ylim(-0.25, 2.05)
    ax.axis("off")
    width, height = 0.86, 0.72
    colours = ("#dbe9f6", "#f3e1ef")  # CT-blue for acquisition, stain-pink for learning
    centres = []
    for row, col, title, detail, module in PIPELINE_STEPS:
        x, y = col, 1.1 - row * 1.1
        centres.append((x + width / 2, y + height / 2))
        ax.add_patch(FancyBboxPatch((x, y), width, height, boxstyle="round,pad=0.02",
                                    facecolor=colours[row], edgecolor="#444444"))
        ax.text(x + width / 2, y + height - 0.13, title, ha="center", va="center", fontsize=10, weight="bold")
        ax.text(x + width / 2, y + height / 2 - 0.04, detail, ha="center", va="center", fontsize=8)
        ax.text(x + width / 2, y + 0.08, module, ha="center", va="center", fontsize=7.5,
                family="monospace", color="#555555")
    for (x0, y0), (x1, y1) in zip(centres[:-1], centres[1:]):
        if y0 == y1:  # horizontal neighbours: arrow between facing edges
            sign = 1 if x1 > x0 else -1
            start, end = (x0 + sign * width / 2, y0), (x1 - sign * width / 2, y1)
        else:
            start, end = (x0, y0 - height / 2), (x1, y1 + height / 2)
        ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=14, color="#333333"))
    ax.text(0.0, 1.95, "acquisition and pairing", fontsize=9, style="italic")
    ax.text(0.0, -0.2, "learning and application", fontsize=9, style="italic")
    fig.tight_layout()
    return fig


def main(argv: list[str] | None = None) -> int:
    """Write the pipeline figure to the PNG path given as the only argument."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m vstain.figures.schematics OUTPUT.png", file=sys.stderr)
        return 2
    fig = draw_pipeline()
    out = Path(args[0])
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=130)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
