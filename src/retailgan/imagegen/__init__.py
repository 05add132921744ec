"""Generated product images: a class-conditional GAN with provenance metadata and offline quality metrics."""
