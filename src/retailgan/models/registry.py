"""Model names used on the command line and in model files, mapped to classes (imported lazily)."""

from __future__ import annotations

import importlib

from retailgan.errors import ConfigError

MODELS: dict[str, str] = {
    "pop": "retailgan.models.baselines:MostPopular",
    "itemknn": "retailgan.models.baselines:ItemKNN",
    "ease": "retailgan.models.baselines:EASE",
    "sansa": "retailgan.models.sansa:SANSA",
    "ials": "retailgan.models.baselines:IALS",
    "bpr": "retailgan.models.baselines:BPR",
    "cfgan": "retailgan.models.gan.cfgan:CFGAN",
    "resgan": "retailgan.models.gan.resgan:ResGAN",
    "featgan": "retailgan.models.gan.featgan.model:FeatureGAN",
    "recent": "retailgan.models.recent:RecentSalesBlend",
    "contentknn": "retailgan.models.cold.contentknn:ContentKNN",
    "dropoutnet": "retailgan.models.cold.dropoutnet:DropoutNet",
    "heater": "retailgan.models.cold.heater:Heater",
    "clcrec": "retailgan.models.cold.clcrec:CLCRec",
    "gar": "retailgan.models.cold.gar:GAR",
}


def get_model_class(name: str) -> type:
    """The recommender class registered as ``name``."""
    try:
        target = MODELS[name]
    except KeyError:
        raise ConfigError(f"unknown model {name!r}; choose from {', '.join(MODELS)}") from None
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def name_of(cls: type) -> str:
    """The registered name of a recommender class."""
    target = f"{cls.__module__}:{cls.__name__}"
    for name, t in MODELS.items():
        if t == target:
            return name
    raise ConfigError(f"{cls.__name__} is not a registered model")
