"""Results: confirmation runs, export, retraining, reports."""
