"""The Optuna layer: one trial's objective, the study, its storage, faults, trial artifacts, the
study against its baseline (``compare``) and the study's note."""
