"""``make bench``: what a search costs on this machine, beside the tutorial's own code."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow loads: no banner lines
