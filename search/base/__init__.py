"""The base: errors, study configs, YAML reading, names, seeds, statistics, paths.

Loads neither TensorFlow nor Optuna; every other layer may import it.
"""
