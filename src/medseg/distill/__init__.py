"""Knowledge distillation from a teacher's image embeddings (CMMC's distilled encoder, ESP-MedSAM's MMDKD); the
embeddings come from :mod:`medseg.training.embedding_cache`."""

from medseg.distill.train import DistillConfig, distill, load_distill_config

__all__ = ["DistillConfig", "distill", "load_distill_config"]
