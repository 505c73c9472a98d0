"""Knowledge distillation from a teacher's image embeddings (CMMC's distilled encoder, ESP-MedSAM's MMDKD)."""

from medseg.distill.embeddings import build_embedding_cache, embedding_cache_dir, open_embeddings

__all__ = ["build_embedding_cache", "embedding_cache_dir", "open_embeddings"]
