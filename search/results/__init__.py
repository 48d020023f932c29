"""Results: the search against its baseline, confirmation runs, export, retraining, reports."""
