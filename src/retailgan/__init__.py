"""retailgan: personalised recommendations and product content with GANs, from raw retail logs."""

__version__ = "0.1.0"
