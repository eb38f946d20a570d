"""Transfer learning: the weight files users already have, loaded into deeparch's models.

* :func:`load_weights` -- torchvision ``.pth`` state dicts and deeparch safetensors files /
  run folders into a model, with a :class:`LoadReport` of what was loaded, renamed and left
  at its initialisation;
* :func:`identify` -- the registered models whose architecture a weights file fits;
* :func:`convert` -- a weights file as deeparch safetensors for one model;
* :func:`create_model` -- ``deeparch.create_model(name, weights=PATH)``;
* :func:`read_weights` -- the tensors of a file, read without running any code from it;
* :func:`cut`, :func:`cut_points`, :func:`freeze`, :func:`unfreeze`, :func:`frozen_report`,
  :func:`new_head`, :func:`param_groups` -- network surgery for the seeds' transfer regimes
  (frozen batch-norm layers stay in eval mode, so their statistics never move);
* :func:`probe` -- where to cut, measured: a linear probe's train and test accuracy at every
  cut point of a frozen network (:class:`ProbeResult`: a table, ``to_dict``, ``plot``);
* :func:`predict`, :func:`load_predictor` -- the top-k classes of images as the weights'
  source prepares them (:class:`Prediction`, :func:`plot_predictions`); ImageNet's class
  names in :data:`IMAGENET_CLASSES`.
"""
from .files import WeightsFile, read_weights
from .report import LoadReport
from .surgery import (Cut, FrozenReport, cut, cut_points, freeze, frozen_report, new_head,
                      param_groups, unfreeze)
from .weights import convert, create_model, identify, load_weights
from .imagenet import IMAGENET_CLASSES, imagenet_classes
from .predict import (Prediction, Predictor, load_predictor, plot_predictions, predict,
                      read_images, read_labels)
from .probe import ProbeResult, ProbeRow, probe

__all__ = ["Cut", "FrozenReport", "LoadReport", "WeightsFile", "convert", "create_model",
           "cut", "cut_points", "freeze", "frozen_report", "identify", "load_weights",
           "new_head", "param_groups", "read_weights", "unfreeze",
           # probe and predict
           "IMAGENET_CLASSES", "Prediction", "Predictor", "ProbeResult", "ProbeRow",
           "imagenet_classes", "load_predictor", "plot_predictions", "predict", "probe",
           "read_images", "read_labels"]
