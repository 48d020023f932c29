"""What the workers' server process loads once, before it forks them (``search.workers``)."""

from search.quiet import import_tensorflow

import_tensorflow()  # first: TensorFlow's start-up lines stay off stderr (``search.quiet``)

import search.objective  # noqa: E402,F401  (TensorFlow, Keras, Optuna: shared by the workers)
