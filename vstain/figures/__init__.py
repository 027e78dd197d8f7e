"""Every drawing the chapters use: arrays and tables in, matplotlib figures out.

One module per topic (:mod:`~vstain.figures.plotting` holds the shared pieces: images with
scale bars, ROIs, histograms; the others draw one chapter's figures). Figures compute
nothing the science modules do not; they read no files.
"""
