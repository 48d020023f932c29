"""Seeds derived from several integers: the study seed, a trial number, a launch, a worker..."""

from __future__ import annotations

import numpy as np

# Seed streams: a search trial's seed is (study seed, trial number); every other seed ends with
# its stream's tag, never 0 (SeedSequence pads with zeros, so (s, 1, 0, 0) would be trial 1's).
CONFIRM_STREAM = 1  # (study seed, 0 baseline / trial + 1, seed index, CONFIRM_STREAM)
RETRAIN_STREAM = 2  # (study seed, 0 chosen / 1 baseline, seed index, RETRAIN_STREAM)


def derive_seed(*entropy: int) -> int:
    """A 31-bit seed from several integers; their count is mixed in too, so that (s, 0) and (s)
    differ (``SeedSequence`` alone pads its entropy with zeros)."""
    return int(np.random.SeedSequence([len(entropy), *entropy]).generate_state(1)[0] >> 1)
