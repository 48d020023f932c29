"""The base: errors, study configs, YAML reading, names, seeds, statistics, paths, arguments.

Loads neither TensorFlow nor Optuna; every other layer may import it.
"""
