"""vstain: virtual staining of X-ray micro-CT of bone implants.

A reproducible re-implementation of Irvine et al., "Virtual staining for 3D X-ray
histology of bone implants": a synthetic bone-implant phantom with ground truth,
2D-3D registration, normalisation, sample-correspondence masks, the paper's four
image-translation models, whole-slide inference, evaluation, Fourier ring
correlation and 3D volume staining.
"""

__version__ = "0.1.0"
