"""screening: distributed screening of CT archives for hepatic steatosis.

The public surface is small: the subpackages (``screening.synthetic``, later ``ingest``,
``model``, ``measure``, ``engine``, ``stats``) hold the functions users call; the contracts are in
:mod:`screening.schemas` and the categories and errors in :mod:`screening.reasons` and
:mod:`screening.errors`.
"""

from screening._version import __version__
from screening.errors import ScreeningError
from screening.reasons import ReasonCode, Status

__all__ = ["ReasonCode", "ScreeningError", "Status", "__version__"]
