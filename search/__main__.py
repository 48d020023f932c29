"""``python -m search``: the command line; it quiets TensorFlow before loading it (``search.learning.quiet``).

Ctrl-C and SIGTERM are one line and exit code 130 from here on, also while the program loads.
"""

import signal
import sys

from search.base.errors import STOP_SIGNALS, stop_on_signals, stopped

if __name__ == "__main__":
    stop_on_signals()  # first: what follows loads for a while
    try:
        from search.interfaces.cli import main

        code = main()
        # Done and told: a stop now has nothing left to stop. Ignored while Python ends, it is
        # neither a traceback from an exit hook nor a death by the default handler (Python drops
        # its own handlers as it ends).
        for signum in STOP_SIGNALS:
            signal.signal(signum, signal.SIG_IGN)
    except BaseException:
        if (stop := stopped()) is None:
            raise
        print(stop, file=sys.stderr)
        code = stop.exit_code
    sys.exit(code)
