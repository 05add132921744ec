"""The product-feature GAN (``featgan``): customer history + noise -> product vector -> nearest
catalogue products.

Products live in one feature space (:mod:`retailgan.features`: title text, category, price band,
collaborative block, the last imputed from text for products without interactions). A linear
**item tower** maps that space to ``emb_dim`` unit vectors ``e_i``, the retrieval space.

* **History encoder**: the mean feature vector of the customer's history and the mean of its
  ``recent`` most recent products, plus ``log(1 + n)``, through a linear layer and ReLU -> ``h``.
* **Generator** ``G(h, z)``: an MLP from ``[h, z]``, ``z ~ N(0, noise_scale^2 I)``, to a unit
  vector in the retrieval space.
* **Discriminator** ``D(h, e)``: a spectral-normalised MLP scoring (history, product vector)
  pairs; real pairs are the product bought next, fake ones G's output. Hinge loss (or the
  non-saturating BCE loss, ``loss="bce"``); two time-scale updates (``lr_d`` > ``lr_g``).
* **Auxiliary retrieval loss** (``aux_weight``): softmax cross-entropy of the true next product
  among the catalogue; ``adversarial=False`` drops D.

Modules, one idea each: :mod:`.config` (hyperparameters), :mod:`.networks`, :mod:`.training`
(examples, losses, epochs; data-parallel under torch.distributed), :mod:`.scoring` (retrieval
space, scores, explanations), :mod:`.slates` (top-k lists and diverse slates), :mod:`.priors`
(early sales of new products, learned trend-following), :mod:`.model` (the recommender, new
products, model files). Measurements and how to choose settings: docs/benchmarks-featgan.md.
"""

from retailgan.models.gan.featgan.config import FeatureGANConfig
from retailgan.models.gan.featgan.model import FeatureGAN
from retailgan.models.gan.featgan.priors import blend_item_prior, buyer_weighted_counts

__all__ = ["FeatureGAN", "FeatureGANConfig", "blend_item_prior", "buyer_weighted_counts"]
