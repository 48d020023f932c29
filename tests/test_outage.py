"""A database that goes away: reconnect with backoff while it is back soon, one clear error if not."""

from __future__ import annotations

import threading
import time

import optuna
import psycopg
import pytest
import sqlalchemy

from search.base.errors import StorageUnavailable
from search.testing import Proxy
from search.tuning import storage as storage_module
from search.tuning.storage import open_storage


@pytest.fixture
def proxied_url(postgres_url):
    url = sqlalchemy.engine.make_url(postgres_url)
    proxy = Proxy((url.host, url.port))
    yield proxy, url.set(port=proxy.port).render_as_string(hide_password=False)
    proxy.down()


def test_a_short_outage_is_ridden_out(proxied_url):
    proxy, url = proxied_url
    study = optuna.create_study(storage=open_storage(url).rdb, direction="maximize")

    def objective(trial: optuna.Trial) -> float:
        if trial.number == 1:  # the server restarts while this trial trains
            proxy.down()
            threading.Timer(3.0, proxy.up).start()
            time.sleep(0.5)
        for step in range(3):
            trial.report(step / 10, step)
        return trial.suggest_float("x", 0, 1)

    start = time.monotonic()
    study.optimize(objective, n_trials=3)
    assert time.monotonic() - start >= 2.5  # it really waited for the server
    states = [t.state for t in optuna.load_study(study_name=study.study_name, storage=url).trials]
    assert states == [optuna.trial.TrialState.COMPLETE] * 3


def test_an_outage_that_lasts_ends_in_an_error(proxied_url, monkeypatch):
    proxy, url = proxied_url
    monkeypatch.setattr(storage_module, "RECONNECT_SECONDS", 2.0)
    storage = open_storage(url).rdb
    optuna.create_study(storage=storage, study_name="gone")
    proxy.down()
    start = time.monotonic()
    with pytest.raises(StorageUnavailable, match=r": database unreachable for 2s, stopping \(") as info:
        optuna.load_study(study_name="gone", storage=storage)
    assert isinstance(info.value.__cause__, psycopg.OperationalError)  # the driver's own error
    assert 1.5 <= time.monotonic() - start < 30
