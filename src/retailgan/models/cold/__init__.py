"""Dedicated cold-start recommenders on one warm backbone (BPR-MF) and one content space.

``dropoutnet`` (Volkovs et al., NeurIPS 2017), ``heater`` (Zhu et al., SIGIR 2020), ``clcrec``
(Wei et al., ACM MM 2021), ``gar`` (Chen et al., SIGIR 2022) and the ``contentknn`` reference;
shared parts in :mod:`retailgan.models.cold.common`. Results: docs/benchmarks-cold.md.
"""
