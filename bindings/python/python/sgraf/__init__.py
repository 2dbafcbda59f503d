"""SGRAF image-text matching from Python: NumPy in and out, no torch.

>>> import sgraf
>>> m = sgraf.Sgraf.load(["weights/f30k_sgr", "weights/f30k_saf"], device="cpu")
>>> s = m.score(features, captions)   # np.float32 [n_images, n_captions]

Every failure raises :class:`SgrafError` (or a subclass). The models run
without the GIL, and Ctrl-C stops a long ``score`` between batches.
"""

from . import _errors
from ._errors import *  # noqa: F401,F403 (the error classes, listed in _errors.__all__)
from ._sgraf import Detector, Explanation, Hit, Regions, Sgraf, build_info, evaluate

__all__ = [
    "Sgraf",
    "Hit",
    "Explanation",
    "Detector",
    "Regions",
    "evaluate",
    "build_info",
    *_errors.__all__,
]
