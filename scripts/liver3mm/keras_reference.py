"""Run the ORIGINAL pyliverlesionseg 0.3 liver network (Keras graph + HDF5 weights) on inputs.

Runs in a throwaway environment, never in the project's: TensorFlow + tf-keras (Keras 2 API)
stand in for the Keras 2.2.2 / TF 1.12 that the wheel pins. The network is built by the
wheel's own, unmodified ``architectures/unet_generalized.py::create_unet_like_model`` with the
hyper-parameters of ``cnn_liver_lesion_seg_CT_MR_functions.py::unet_liver_predict``, and its
weights are loaded with Keras' own ``load_weights``. See README.md beside this file.

    python keras_reference.py WHEEL_DIR INPUTS.npz OUTPUTS.npz [--float64]

``INPUTS.npz`` holds arrays of shape (189, 162, 162) in the network's own axis order (x, y, z;
RAS) and scale ([-0.5, 0.5]); ``OUTPUTS.npz`` gets the sigmoid output (163, 136, 136) of each,
under the same names.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import numpy as np

WEIGHTS = (
    "trained_models/model_unet_ct_mr_liv_seg_resize_1.5mm_med_3_resize_3mm_20201011_"
    "dice_loss_val_binary_dice_mean.hdf5"
)


def _shim_keras() -> None:
    """Make ``import keras...`` (Keras 2.2 module paths) resolve to tf-keras."""
    import tf_keras
    from tf_keras import backend, layers, models, regularizers

    keras = types.ModuleType("keras")
    keras.models, keras.layers, keras.backend, keras.regularizers = (
        models,
        layers,
        backend,
        regularizers,
    )
    keras.__version__ = tf_keras.__version__
    sys.modules.update(
        {
            "keras": keras,
            "keras.models": models,
            "keras.layers": layers,
            "keras.layers.convolutional": layers,
            "keras.layers.advanced_activations": layers,
            "keras.layers.normalization": layers,
            "keras.backend": backend,
            "keras.regularizers": regularizers,
        }
    )


def _exact_reductions() -> None:
    import tensorflow as tf
    from tf_keras import backend

    def mean(x, axis=None, keepdims=False):  # type: ignore[no-untyped-def]
        return tf.cast(tf.reduce_mean(tf.cast(x, tf.float64), axis, keepdims), x.dtype)

    def std(x, axis=None, keepdims=False):  # type: ignore[no-untyped-def]
        return tf.cast(tf.math.reduce_std(tf.cast(x, tf.float64), axis, keepdims), x.dtype)

    backend.mean, backend.std = mean, std


def build_original(wheel_dir: Path, *, exact_reductions: bool = False):  # type: ignore[no-untyped-def]
    _shim_keras()
    if exact_reductions:
        _exact_reductions()
    path = wheel_dir / "pyliverlesionseg" / "architectures" / "unet_generalized.py"
    spec = importlib.util.spec_from_file_location("unet_generalized", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    # Exactly the call in unet_liver_predict (segment_size = [163, 136, 136]).
    model = module.create_unet_like_model(
        number_input_features=1,
        subsample_factors_per_pathway=[(1, 1, 1), (3, 3, 3), (9, 9, 9), (27, 27, 27)],
        kernel_sizes_per_pathway=[
            [[(3, 3, 1), (3, 3, 3)], [(3, 3, 3), (3, 3, 1)]],
            [[(3, 3, 1), (3, 3, 3)], [(3, 3, 3), (3, 3, 1)]],
            [[(3, 3, 1), (3, 3, 3)], [(3, 3, 3), (3, 3, 1)]],
            [[(3, 3, 3), (3, 3, 3)], []],
        ],
        number_features_per_pathway=[
            [[20, 40], [40, 20]],
            [[40, 80], [80, 40]],
            [[80, 160], [160, 80]],
            [[160, 160], []],
        ],
        output_size=[163, 136, 136],
        padding="same",
        upsampling="linear",
        mask_output=False,
        l2_reg=1e-5,
        verbose=True,
    )
    model.load_weights(str(wheel_dir / "pyliverlesionseg" / WEIGHTS))
    return model


def main(argv: list[str]) -> int:
    wheel_dir, inputs, outputs = (Path(a) for a in argv[1:4])
    dtype = np.float64 if "--float64" in argv else np.float32
    if dtype is np.float64:  # separates float32 rounding from porting errors
        import tf_keras

        tf_keras.backend.set_floatx("float64")
    model = build_original(wheel_dir, exact_reductions="--exact-reductions" in argv)
    print("input shape", model.input_shape, "output shape", model.output_shape)
    data = np.load(inputs)
    out = {}
    for name in data.files:
        x = data[name].astype(dtype)[None, ..., None]
        out[name] = model.predict(x, batch_size=1)[0, ..., 0]
        print(name, "->", out[name].shape, float(out[name].min()), float(out[name].max()))
    np.savez_compressed(outputs, **out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
