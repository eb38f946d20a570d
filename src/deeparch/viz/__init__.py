"""Looking at images and inside networks: grids, previews, activation maps, saliency."""
from .activations import activations, plot_activations, plot_compare, plot_filters
from .attribution import gradcam, plot_attribution, saliency
from .grid import preview, save_image_grid
from .lesion import lesion, lesion_run, lesion_units, plot_lesion
from .layers import capture, layer_table, resolve_layer, resolve_layers
from .maximize import color_decorrelation, maximize, plot_maximized

__all__ = ["activations", "capture", "layer_table", "plot_activations", "plot_compare",
           "plot_filters", "resolve_layer", "resolve_layers", "preview", "save_image_grid",
           "gradcam", "saliency", "plot_attribution", "lesion", "lesion_run", "lesion_units",
           "plot_lesion", "maximize", "plot_maximized", "color_decorrelation"]
