"""Seeds derived from several integers: the study seed, a trial number, a launch, a worker..."""

from __future__ import annotations

import numpy as np


def derive_seed(*entropy: int) -> int:
    """A 31-bit seed from several integers; their count is mixed in too, so that (s, 0) and (s)
    differ (``SeedSequence`` alone pads its entropy with zeros)."""
    return int(np.random.SeedSequence([len(entropy), *entropy]).generate_state(1)[0] >> 1)
