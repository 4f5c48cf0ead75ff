"""pixelwise: semantic segmentation for small labelled image sets."""
from pixelwise.models.registry import create_model, list_backbones, list_models

__all__ = ["create_model", "list_models", "list_backbones"]
__version__ = "0.1.0"
