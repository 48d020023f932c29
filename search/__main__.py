"""``python -m search``: the command line; it quiets TensorFlow before loading it (``search.learning.quiet``)."""

import sys

from search.interfaces.cli import main

if __name__ == "__main__":
    sys.exit(main())
