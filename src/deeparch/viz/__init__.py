"""Looking at images and inside networks: grids, previews, activation maps, saliency."""
from .grid import preview, save_image_grid

__all__ = ["preview", "save_image_grid"]
