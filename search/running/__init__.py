"""Running a search: how many workers, the worker processes, progress, the search command."""
