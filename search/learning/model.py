"""The tutorial's CNN, built from one trial's regularization hyperparameters."""

from __future__ import annotations

import keras
from keras import layers, regularizers

from search.base.config import Training


def build_model(l1: float, l2: float, dropout: float, training: Training) -> keras.Model:
    """Conv(32)-Pool-Conv(64)-Pool-Conv(64)-Dense(64, L1+L2)-Dropout-Dense(10), compiled.

    Takes uint8 pixels and scales them to [0, 1] itself, so the data stays uint8 in memory.
    ``training.regularize_conv`` puts the same L1/L2 penalty on the conv kernels too.
    """
    penalty = regularizers.l1_l2(l1=l1, l2=l2)
    conv_penalty = penalty if training.regularize_conv else None
    model = keras.Sequential(
        [
            keras.Input(shape=(32, 32, 3)),
            layers.Rescaling(1.0 / 255),
            layers.Conv2D(32, 3, activation="relu", kernel_regularizer=conv_penalty),
            layers.MaxPooling2D(),
            layers.Conv2D(64, 3, activation="relu", kernel_regularizer=conv_penalty),
            layers.MaxPooling2D(),
            layers.Conv2D(64, 3, activation="relu", kernel_regularizer=conv_penalty),
            layers.Flatten(),
            layers.Dense(64, activation="relu", kernel_regularizer=penalty),
            layers.Dropout(dropout),
            layers.Dense(10, activation="softmax"),
        ],
        name="cifar10_regularized_cnn",
    )
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=training.learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
        # Several batches per call of the compiled step: less Python per batch. Batch-level
        # callbacks (a stop request, TerminateOnNaN) then run every 8 batches.
        steps_per_execution=8,
    )
    return model
