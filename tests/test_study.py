"""The config's sampler and pruner become Optuna's and do what the config says: run them and watch."""

from __future__ import annotations

import optuna
from optuna.distributions import FloatDistribution

from search.base import config as cfg
from search.tuning.study import make_pruner, make_sampler

SPACE = {"x": FloatDistribution(0.0, 1.0), "y": FloatDistribution(1e-6, 1.0, log=True)}
EPOCHS = 20


def sampled(sampler: optuna.samplers.BaseSampler, n: int) -> list[dict[str, float]]:
    """What ``sampler`` asks for ``n`` trials in a row, each told its x as value."""
    study = optuna.create_study(sampler=sampler, direction="maximize")
    points = []
    for _ in range(n):
        trial = study.ask(SPACE)
        points.append(trial.params)
        study.tell(trial, trial.params["x"])
    return points


def pruned_at(pruner: optuna.pruners.BasePruner, curves: list[list[float]]) -> list[int | None]:
    """Run one trial per curve (values at epochs 1, 2, ...): the epoch each was pruned at, or None."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(pruner=pruner, direction="maximize")
    epochs = []
    for curve in curves:
        trial = study.ask(SPACE)
        stop = next((epoch for epoch, value in enumerate(curve, start=1)
                     if trial.report(value, epoch) or trial.should_prune()), None)
        study.tell(trial, state=optuna.trial.TrialState.PRUNED) if stop else study.tell(trial, max(curve))
        epochs.append(stop)
    return epochs


def test_tpe_samples_at_random_for_its_startup_trials_then_models():
    config = cfg.TPE(n_startup_trials=7, multivariate=False, constant_liar=False)
    tpe = sampled(make_sampler(config, 3), 12)
    random = sampled(make_sampler(cfg.RandomSampler(name="random"), 3), 12)
    assert tpe[:7] == random[:7]  # the startup trials: random, from the same seed
    assert tpe[7:] != random[7:]  # then the model of the told values
    assert tpe == sampled(make_sampler(config, 3), 12)  # seeded: replayable
    assert tpe != sampled(make_sampler(config, 4), 12)
    multivariate = cfg.TPE(n_startup_trials=7, multivariate=True, constant_liar=False)
    assert sampled(make_sampler(multivariate, 3), 12)[7:] != tpe[7:]  # the flag reaches the sampler


def test_median_waits_for_its_startup_trials_and_warmup_epochs():
    pruner = make_pruner(cfg.MedianPruner(n_startup_trials=4, n_warmup_steps=6), max_epochs=EPOCHS)
    good, bad = [0.9] * EPOCHS, [0.1] * EPOCHS
    # trials 0-2 finished: still in the startup, the bad one runs to the end
    assert pruned_at(pruner, [good, good, good, bad]) == [None] * 4
    # 4 finished: a bad trial trains its 6 warm-up epochs and is pruned at the 7th
    assert pruned_at(pruner, [good] * 4 + [bad]) == [None] * 4 + [7]


def test_successive_halving_decides_first_after_min_resource_epochs():
    pruner = make_pruner(cfg.SuccessiveHalvingPruner(name="successive_halving", min_resource=3,
                                                     reduction_factor=5), EPOCHS)
    assert pruned_at(pruner, [[0.9] * EPOCHS, [0.1] * EPOCHS]) == [None, 3]


def test_hyperband_decides_no_earlier_than_min_resource_and_stops_some():
    pruner = make_pruner(cfg.HyperbandPruner(name="hyperband", min_resource=2, reduction_factor=4), EPOCHS)
    curves = [[0.9 - 0.05 * i] * EPOCHS for i in range(12)]  # each worse than the ones before
    stops = pruned_at(pruner, curves)
    assert stops[0] is None and all(s is None or s >= 2 for s in stops)
    assert any(s is not None for s in stops)


def test_no_pruner_never_prunes():
    assert pruned_at(make_pruner(cfg.NoPruner(name="none"), EPOCHS), [[0.9] * EPOCHS, [0.1] * EPOCHS]) == [None] * 2
