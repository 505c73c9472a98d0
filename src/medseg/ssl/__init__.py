"""Self-supervised pre-training: views, encoder backbones, SimSiam / BYOL / DINO, and MedSASS's Otsu pseudo-masks."""

from medseg.models.parts import encoder_prefix
from medseg.ssl.backbone import Backbone
from medseg.ssl.methods import BYOL, DINO, METHODS, SimSiam, SslMethod, build_method
from medseg.ssl.views import ViewOptions, random_view

__all__ = ["BYOL", "DINO", "METHODS", "Backbone", "SimSiam", "SslMethod", "ViewOptions", "build_method",
           "encoder_prefix", "random_view"]
