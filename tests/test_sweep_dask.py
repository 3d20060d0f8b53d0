"""A sweep on a Dask cluster: the chunks run as tasks on its workers, the table is the local one."""

import pandas as pd
import pytest
from distributed import Client, Future, LocalCluster

from framework.sweep import sweep
from framework.synthetic import generate_ohlcv


@pytest.fixture
def client():
    # threads in this process: quick to start, and the workers share the compiled kernels
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=":0") as cluster:
        with Client(cluster) as c:
            yield c


def test_cluster_sweep_equals_local_sweep_bit_for_bit_and_scatters_prices_once(client, monkeypatch):
    data = {"A": generate_ohlcv(1500, freq="1h", seed=41),
            "B": generate_ohlcv(900, freq="1h", seed=42, start="2021-06-01")}
    grid = {"fast": [5, 8, 12], "slow": [20, 30, 60]}
    settings = dict(fees=0.001, sl_pct=0.03, allow_short=True)
    local = sweep("sma_cross", data, grid, **settings)

    scattered, submitted = [], []
    scatter, submit = client.scatter, client.submit
    monkeypatch.setattr(client, "scatter", lambda obj, **kw: scattered.append(obj) or scatter(obj, **kw))
    monkeypatch.setattr(client, "submit", lambda *a, **kw: submitted.append(a) or submit(*a, **kw))
    remote = sweep("sma_cross", data, grid, client=client, chunk=4, **settings)

    pd.testing.assert_frame_equal(remote, local, check_exact=True)
    assert (local["total_trades"] > 5).all()
    # each instrument's prices go out once; a task carries their future and only its rows'
    # parameters (9 rows in chunks of 4)
    assert len(scattered) == 2
    assert all(isinstance(a[2], Future) for a in submitted)
    assert [len(a[3]) for a in submitted] == [4, 4, 1, 4, 4, 1]
