"""medseg: universal, prompt-free 2-D medical image segmentation.

Sub-packages mirror the system: :mod:`medseg.data` (readers, catalog, splits, synthetic phantoms),
:mod:`medseg.ops` (pure image operators), :mod:`medseg.metrics` (Dice, IoU, NSD, HD95),
:mod:`medseg.cli` (the ``medseg`` command).
"""

from medseg.errors import InvalidInputError, MedsegError, UnknownModalityError

__version__ = "0.1.0"

__all__ = ["InvalidInputError", "MedsegError", "UnknownModalityError", "__version__"]
