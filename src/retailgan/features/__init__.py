"""Product feature space: text, category, price band and collaborative blocks (see :mod:`.space`)."""

from retailgan.features.space import FeatureSpace, FeatureSpaceConfig
from retailgan.features.text import TextEncoder

__all__ = ["FeatureSpace", "FeatureSpaceConfig", "TextEncoder"]
