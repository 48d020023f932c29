"""The config's sampler and pruner become Optuna's, with the values the config gives."""

from __future__ import annotations

import optuna

from search.base import config as cfg
from search.tuning.study import make_pruner, make_sampler


def test_samplers():
    tpe = make_sampler(cfg.TPE(n_startup_trials=7, multivariate=False, constant_liar=False), seed=3)
    assert isinstance(tpe, optuna.samplers.TPESampler)
    assert (tpe._n_startup_trials, tpe._multivariate, tpe._constant_liar) == (7, False, False)
    assert isinstance(make_sampler(cfg.RandomSampler(name="random"), seed=3), optuna.samplers.RandomSampler)


def test_pruners():
    median = make_pruner(cfg.MedianPruner(n_startup_trials=4, n_warmup_steps=6), max_epochs=20)
    assert isinstance(median, optuna.pruners.MedianPruner)
    assert (median._n_startup_trials, median._n_warmup_steps) == (4, 7)  # steps count epochs from 1

    hyperband = make_pruner(cfg.HyperbandPruner(name="hyperband", min_resource=2, reduction_factor=4), 17)
    assert isinstance(hyperband, optuna.pruners.HyperbandPruner)
    assert (hyperband._min_resource, hyperband._max_resource, hyperband._reduction_factor) == (2, 17, 4)

    halving = make_pruner(cfg.SuccessiveHalvingPruner(name="successive_halving", min_resource=3,
                                                      reduction_factor=5), 20)
    assert isinstance(halving, optuna.pruners.SuccessiveHalvingPruner)
    assert (halving._min_resource, halving._reduction_factor) == (3, 5)

    assert isinstance(make_pruner(cfg.NoPruner(name="none"), 20), optuna.pruners.NopPruner)
