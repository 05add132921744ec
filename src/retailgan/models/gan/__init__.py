"""GAN-based recommenders trained by the shared trainer loop."""
