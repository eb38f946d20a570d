"""Reference outputs from Keras itself, for tests/transfer/test_keras_weights.py.

Run in a subprocess of the virtual environment's interpreter with ``KERAS_BACKEND=torch``
(Keras 3 on the torch backend: kept out of the test process, whose torch it would share):

    KERAS_BACKEND=torch python tests/transfer/keras_reference.py OUTDIR < cases.json

``cases.json`` is a list of ``{"case", "app", "size", "seed", "kwargs", "notop", "model_h5"}``.
For each case this builds ``keras.applications.<app>(weights=None,
classifier_activation=None, input_shape=(size, size, 3), **kwargs)`` and makes every tensor
matter: random biases, batch-norm scales and shifts, and random running statistics (each
BN's mean and variance measured on what reaches it in one eval-mode pass over a batch of
noise -- through the BNs before it, already randomised --, shifted by up to +-0.3 std and the
variance scaled by 0.5..2 at random, channel by channel: random yet well conditioned, as
tests/transfer/tv_reference.py does for torchvision), and for EfficientNet a random input
Normalization. It writes

    OUTDIR/<case>.weights.h5   model.save_weights (Keras 3's format)
    OUTDIR/<case>.h5           the legacy HDF5 format of Keras 2 / tf.keras (layer_names,
                               weight_names), as keras.src.legacy writes it
    OUTDIR/<case>.model.h5     (with "model_h5") model.save('x.h5'): the whole model, legacy
    OUTDIR/<case>.notop.h5     (with "notop") the same weights in include_top=False's model,
                               and OUTDIR/<case>.notop.npy its feature maps for the input
    OUTDIR/<case>.input.npy    the input (N, H, W, C, float32) and
    OUTDIR/<case>.output.npy   the output (logits), eval mode, and
    OUTDIR/<case>.output64.npy the same weights' output in float64 (floatx float64)
    OUTDIR/manifest.json       Keras' version, the seconds each case took, each model's
                               trainable parameters and count_params()
"""
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "torch")

import numpy as np  # noqa: E402

import keras  # noqa: E402
from keras.src.layers.normalization.batch_normalization import BatchNormalization  # noqa: E402
from keras.src.legacy.saving import legacy_h5_format  # noqa: E402

_CALIBRATE: dict = {}
_original_call = BatchNormalization.call


def _calibrating_call(self, inputs, training=None, mask=None):
    """In the calibration pass, set this BN's moving statistics from what reaches it."""
    rng = _CALIBRATE.get("rng")
    if rng is not None:
        x = keras.ops.convert_to_numpy(inputs).astype(np.float64)
        axes = tuple(range(x.ndim - 1))
        mean, var = x.mean(axes), x.var(axes)
        # a channel nearly constant over the batch would make BN divide a cancellation by
        # ~sqrt(eps): floor its variance at 0.3 of its second moment
        var = np.maximum(var, 0.3 * (x * x).mean(axes))
        shift = rng.uniform(-0.3, 0.3, mean.shape)
        self.moving_mean.assign((mean + shift * np.sqrt(var)).astype("float32"))
        self.moving_variance.assign((var * rng.uniform(0.5, 2.0, var.shape)).astype("float32"))
    if keras.backend.standardize_dtype(inputs.dtype) == "float64":
        # Keras' own batch norm loses float32-sized bits even under a float64 policy (3e-7 of
        # a single layer's output, measured against its formula in numpy), which would hide
        # the float64 proof; the float64 reference computes the formula Keras documents
        inv = keras.ops.rsqrt(keras.ops.cast(self.moving_variance, "float64") + self.epsilon)
        inv = inv * keras.ops.cast(self.gamma, "float64")
        return ((inputs - keras.ops.cast(self.moving_mean, "float64")) * inv
                + keras.ops.cast(self.beta, "float64"))
    return _original_call(self, inputs, training=False, mask=mask)


BatchNormalization.call = _calibrating_call

_original_gap = keras.layers.GlobalAveragePooling2D.call


def _gap_call(self, inputs):
    """keras.ops.mean loses float32-sized bits of a float64 tensor (1e-7 of a plain mean,
    measured); the float64 reference takes torch's mean (the torch backend's tensors)."""
    if keras.backend.standardize_dtype(inputs.dtype) == "float64":
        import torch
        dims = (1, 2) if self.data_format == "channels_last" else (2, 3)
        return torch.mean(inputs, dim=dims, keepdim=self.keepdims)
    return _original_gap(self, inputs)


keras.layers.GlobalAveragePooling2D.call = _gap_call

_original_dense = keras.layers.Dense.call


def _dense_call(self, inputs, training=None):
    """keras.ops.matmul of float64 tensors is off by 1e-6 (measured against numpy): the
    float64 reference multiplies with torch."""
    if keras.backend.standardize_dtype(inputs.dtype) == "float64":
        import torch
        x = torch.matmul(inputs, self.kernel.value) + self.bias.value
        return self.activation(x) if self.activation is not None else x
    return _original_dense(self, inputs, training=training)


keras.layers.Dense.call = _dense_call

_original_normalization = keras.layers.Normalization.call


def _normalization_call(self, inputs):
    """Keras' Normalization of a float64 tensor is off by 1e-7 (measured against numpy): the
    float64 reference computes its formula, (x - mean) / max(sqrt(variance), 1e-7)."""
    if keras.backend.standardize_dtype(inputs.dtype) == "float64":
        import torch
        mean = self.adapt_mean.value.to(torch.float64)
        std = torch.clamp(self.adapt_variance.value.to(torch.float64).sqrt(), min=1e-7)
        return (inputs - mean) / std
    return _original_normalization(self, inputs)


keras.layers.Normalization.call = _normalization_call


def _closing_bns(model):
    """The BN that ends a residual branch (ResNet's _3_bn, the MBConv's project BN with a
    residual, Xception's middle-flow third BN): kept small as in trained networks, so that
    the residual stream's mean does not outgrow its spread through the depth."""
    names = {l.name for l in model.layers}
    for l in model.layers:
        n = l.name
        if not isinstance(l, BatchNormalization):
            continue
        if n.endswith("_3_bn") or (n.endswith("project_bn") and n[:-len("project_bn")] + "add"
                                   in names) or (n.endswith("project_BN") and n[:-len("project_BN")]
                                                 + "add" in names) or n.endswith("sepconv3_bn"):
            yield l


def randomize(model, x, rng):
    for layer in model.layers:
        for w in layer.weights:
            path = w.path.split("/")[-1]
            if path == "bias":
                w.assign(rng.normal(0.0, 0.1, w.shape).astype("float32"))
        if isinstance(layer, BatchNormalization):
            layer.gamma.assign(rng.uniform(0.5, 1.5, layer.gamma.shape).astype("float32"))
            layer.beta.assign(rng.normal(0.0, 0.2, layer.beta.shape).astype("float32"))
        if type(layer).__name__ == "Normalization":
            c = layer.adapt_mean.shape
            layer.adapt_mean.assign(rng.uniform(0.35, 0.6, c).astype("float32"))
            layer.adapt_variance.assign(rng.uniform(0.04, 0.09, c).astype("float32"))
            layer.finalize_state()
    for bn in _closing_bns(model):
        bn.gamma.assign(rng.uniform(0.1, 0.3, bn.gamma.shape).astype("float32"))
    for layer in model.layers:       # ResNet v2 closes its branches with a conv, not a BN
        if layer.name.endswith("_3_conv") and not any(
                l.name == layer.name[:-len("conv")] + "bn" for l in model.layers):
            layer.kernel.assign(keras.ops.convert_to_numpy(layer.kernel) * 0.2)
    noise = np.concatenate([x, rng.normal(0, 1, (6, *x.shape[1:])).astype("float32")
                            * x.std() + x.mean()])
    _CALIBRATE["rng"] = rng
    try:
        model(noise)
    finally:
        _CALIBRATE.pop("rng")


def main():
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    cases = json.load(sys.stdin)
    import torch
    torch.set_num_threads(int(sys.argv[2]) if len(sys.argv) > 2 else 2)
    seconds, params = {}, {}
    for c in cases:
        t0 = time.perf_counter()
        rng = np.random.default_rng(c["seed"])
        keras.utils.set_random_seed(c["seed"])
        keras.backend.clear_session()        # fresh automatic names (conv2d, conv2d_1...)
        build = getattr(keras.applications, c["app"])
        size = c["size"]
        model = build(weights=None, classifier_activation=None, input_shape=(size, size, 3),
                      **c.get("kwargs", {}))
        if c["app"].startswith("EfficientNet"):       # raw pixels: Keras rescales them itself
            x = rng.uniform(0, 255, (2, size, size, 3)).astype("float32")
        else:
            x = rng.normal(0, 1, (2, size, size, 3)).astype("float32")
        randomize(model, x, rng)
        y = keras.ops.convert_to_numpy(model(x))
        np.save(out / f"{c['case']}.input.npy", x)
        np.save(out / f"{c['case']}.output.npy", y)
        # the same weights in float64: Keras' own float32 error, and the proof of exactness
        keras.config.set_dtype_policy("float64")
        keras.config.set_floatx("float64")
        try:
            model64 = build(weights=None, classifier_activation=None,
                            input_shape=(size, size, 3), **c.get("kwargs", {}))
            model64.set_weights(model.get_weights())
            for layer in model64.layers:
                if type(layer).__name__ == "Normalization":
                    layer.finalize_state()
            y64 = keras.ops.convert_to_numpy(model64(x.astype("float64")))
        finally:
            keras.config.set_dtype_policy("float32")
            keras.config.set_floatx("float32")
        np.save(out / f"{c['case']}.output64.npy", y64)
        model.save_weights(out / f"{c['case']}.weights.h5")
        import h5py
        with h5py.File(out / f"{c['case']}.h5", "w") as f:
            legacy_h5_format.save_weights_to_hdf5_group(f, model)
        if c.get("model_h5"):
            model.save(out / f"{c['case']}.model.h5")
        if c.get("notop"):
            bare = build(weights=None, include_top=False, input_shape=(size, size, 3),
                         **c.get("kwargs", {}))
            for layer in bare.layers:
                if layer.weights:
                    layer.set_weights(model.get_layer(layer.name).get_weights())
            with h5py.File(out / f"{c['case']}.notop.h5", "w") as f:
                legacy_h5_format.save_weights_to_hdf5_group(f, bare)
            np.save(out / f"{c['case']}.notop.npy", keras.ops.convert_to_numpy(bare(x)))
        trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
        params[c["case"]] = {"trainable": trainable, "count_params": model.count_params()}
        seconds[c["case"]] = round(time.perf_counter() - t0, 2)
        print(f"{c['case']}: {seconds[c['case']]} s", file=sys.stderr, flush=True)
    (out / "manifest.json").write_text(json.dumps(
        {"keras": keras.__version__, "backend": keras.backend.backend(), "seconds": seconds,
         "params": params}, indent=1))


if __name__ == "__main__":
    main()
