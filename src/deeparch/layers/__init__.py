"""The layer vocabulary shared by every architecture (and by the pattern language)."""
from .activation import activation_names, functional_activation, make_activation
from .blocks import ChannelShuffle, SqueezeExcite, make_divisible
from .conv import (Conv1d, Conv2d, ConvNormAct, DepthwiseConv2d, PointwiseConv2d,
                   SeparableConv2d, SpatiallySeparableConv2d, TFConv2d, resolve_padding,
                   same_padding, tf_same_pads)
from .dense import Dense
from .norm import LayerNorm2d, LocalResponseNorm, make_norm2d
from .pool import (AvgPool1d, AvgPool2d, GlobalAvgPool2d, GlobalMaxPool2d, MaxPool1d,
                   MaxPool2d, TFMaxPool2d)
from .regularize import Dropout, DropPath, drop_path

__all__ = [
    "activation_names", "functional_activation", "make_activation", "ChannelShuffle",
    "SqueezeExcite", "make_divisible", "Conv1d", "Conv2d", "ConvNormAct", "DepthwiseConv2d",
    "PointwiseConv2d", "SeparableConv2d", "SpatiallySeparableConv2d", "TFConv2d", "TFMaxPool2d",
    "resolve_padding", "tf_same_pads",
    "same_padding", "Dense", "LayerNorm2d", "LocalResponseNorm", "make_norm2d", "AvgPool1d",
    "AvgPool2d", "GlobalAvgPool2d", "GlobalMaxPool2d", "MaxPool1d", "MaxPool2d", "Dropout",
    "DropPath", "drop_path",
]
