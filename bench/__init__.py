"""``make bench``: what a search costs on this machine, beside the tutorial's own code."""
