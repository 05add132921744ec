"""Top-k inner-product search over product vectors: one interface, exact and faiss backends."""

from retailgan.index.topk import ExactIndex, FaissIndex, TopKIndex, faiss_available, make_index

__all__ = ["ExactIndex", "FaissIndex", "TopKIndex", "faiss_available", "make_index"]
