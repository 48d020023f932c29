"""What the workers' server process loads once, before it forks them (``search.running.workers``)."""

import signal

# First: the server ignores a Ctrl-C, which a terminal sends to the whole process group, and
# which would kill it mid-import with a traceback; the command passes stops on to its workers
# itself, and the server ends with the command. (Its workers ignore SIGINT too.)
signal.signal(signal.SIGINT, signal.SIG_IGN)

from search.learning.quiet import import_tensorflow  # noqa: E402

import_tensorflow()  # first: TensorFlow's start-up lines stay off stderr (``search.learning.quiet``)

import search.tuning.objective  # noqa: E402,F401  (TensorFlow, Keras, Optuna: shared by the workers)
