"""``python -m search``: the command line; it quiets TensorFlow before loading it (``search.quiet``)."""

import sys

from search.cli import main

if __name__ == "__main__":
    sys.exit(main())
