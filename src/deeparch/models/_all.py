"""Import every family file so that its @register calls fill the registry."""
from . import alexnet, fashion_cnn, lenet, vgg  # noqa: F401
