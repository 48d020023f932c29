"""What the workers' server process loads once, before it forks them (``search.running.workers``)."""

# The server holds Ctrl-C blocked from its start (``search.running.workers._start_server``).
from search.learning.quiet import import_tensorflow

import_tensorflow()  # first: TensorFlow's start-up lines stay off stderr (``search.learning.quiet``)

import search.tuning.objective  # noqa: E402,F401  (TensorFlow, Keras, Optuna: shared by the workers)
