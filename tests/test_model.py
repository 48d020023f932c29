import keras
import pytest

from search.base.config import Training
from search.learning.model import build_model


def test_tutorial_architecture_and_parameter_count():
    model = build_model(l1=0.0, l2=1e-3, dropout=0.5, training=Training())
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds == ["Rescaling", "Conv2D", "MaxPooling2D", "Conv2D", "MaxPooling2D", "Conv2D",
                     "Flatten", "Dense", "Dropout", "Dense"]
    assert model.count_params() == 122_570
    assert [layer.filters for layer in model.layers if isinstance(layer, keras.layers.Conv2D)] == [32, 64, 64]
    assert model.layers[-3].units == 64 and model.layers[-1].units == 10
    assert model.layers[-2].rate == 0.5


def test_the_learning_rate_comes_from_the_config():
    model = build_model(l1=0.0, l2=1e-3, dropout=0.5, training=Training(learning_rate=3e-4))
    assert model.optimizer.learning_rate.numpy() == pytest.approx(3e-4)


def test_penalties_sit_on_the_dense_kernel_only_by_default():
    model = build_model(l1=1e-4, l2=1e-3, dropout=0.1, training=Training())
    dense = model.layers[-3]
    assert dense.kernel_regularizer.get_config() == pytest.approx({"l1": 1e-4, "l2": 1e-3})
    others = [layer for layer in model.layers if layer is not dense and hasattr(layer, "kernel_regularizer")]
    assert others and all(layer.kernel_regularizer is None for layer in others)


def test_regularize_conv_extends_the_penalty():
    model = build_model(l1=1e-4, l2=1e-3, dropout=0.1, training=Training(regularize_conv=True))
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert all(layer.kernel_regularizer.get_config() == pytest.approx({"l1": 1e-4, "l2": 1e-3}) for layer in convs)
    assert model.layers[-1].kernel_regularizer is None


def test_scales_uint8_pixels_to_unit_range():
    model = build_model(l1=0.0, l2=0.0, dropout=0.0, training=Training())
    assert model.layers[0].scale == pytest.approx(1 / 255)
