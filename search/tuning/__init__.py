"""The Optuna layer: one trial's objective, the study, its storage, faults and trial artifacts."""
