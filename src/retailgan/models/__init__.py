"""Recommenders: the protocol, baselines and GAN models."""
