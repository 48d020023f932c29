"""Learning without Optuna: CIFAR-10 batches, the tutorial's CNN, training, TensorFlow's quieting."""
