"""Generated product images: a class-conditional GAN with provenance metadata and offline quality metrics."""

DEFAULT_TRUNCATION = 0.8
"""Scale of the noise for images drawn from noise (by category, catalogue fill, evaluation): below 1 trades
variety for fidelity (BigGAN's truncation trick, with the noise scaled rather than resampled). 0.8 was
tried on run C of docs/benchmarks-images.md and fixed before run D, the model the reported numbers are of."""
