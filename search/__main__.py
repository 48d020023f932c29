"""``python -m search``: the command line; it quiets TensorFlow before loading it (``search.learning.quiet``).

Ctrl-C and SIGTERM are one line and exit code 130 from here on, also while the program loads.
"""

import sys

from search.base.errors import stop_on_signals, stopped

if __name__ == "__main__":
    stop_on_signals()  # first: what follows loads for a while
    try:
        from search.interfaces.cli import main
    except BaseException:
        if (stop := stopped()) is None:
            raise
        print(stop, file=sys.stderr)
        sys.exit(stop.exit_code)
    sys.exit(main())
