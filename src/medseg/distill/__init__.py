"""Knowledge distillation from a teacher's image embeddings (CMMC's distilled encoder, ESP-MedSAM's MMDKD)."""

from medseg.distill.embeddings import build_embedding_cache, embedding_cache_dir, open_embeddings
from medseg.distill.train import DistillConfig, distill, load_distill_config

__all__ = ["DistillConfig", "build_embedding_cache", "distill", "embedding_cache_dir", "load_distill_config",
           "open_embeddings"]
