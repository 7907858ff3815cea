"""tokenattr: token attributions inside transformers — the paper's method (Chen et al., TMLR 2022) and its
baselines for ViT, BERT and CLIP, on one transformer core.

    model = tokenattr.load_model("vit.pth")
    relevance = tokenattr.explain(model, pixel_values, method="ours-h")   # [B, N]
    maps = tokenattr.to_image_map(relevance, image_size=224)               # [B, 224, 224]
"""

from .methods import METHODS, explain, get_method
from .models import load_model
from .viz import to_image_map

__version__ = "0.1.0"

__all__ = ["METHODS", "explain", "get_method", "load_model", "to_image_map", "__version__"]
