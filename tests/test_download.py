"""ccxt downloads against the local exchange: pagination, cache, retries, open candles, CLI."""

from __future__ import annotations

import argparse
import time

import ccxt
import numpy as np
import pandas as pd
import pytest

from framework import data_cli
from framework.data import load_ohlcv
from framework.download import (
    DownloadError,
    RetryPolicy,
    call_with_retries,
    closed_candles_end,
    create_exchange,
    download_many,
    download_ohlcv,
    load_credentials,
    point_exchange_at,
    read_cache,
)
from framework.local_exchange import LocalExchange
from tests.exchange_fixtures import (  # noqa: F401
    API_KEY,
    BTC,
    ETH,
    SECRET,
    START,
    after_calls,
    client,
    exchange,
    ms,
)

FAST = RetryPolicy(max_retries=3, base_delay_s=0.01, max_delay_s=0.05)
KLINES = "/api/v3/klines"


def download(ex, since=START, until=None, *, cache_dir, **kw):
    kw.setdefault("retry", FAST)
    kw.setdefault("page_limit", 100)
    c = kw.pop("ccxt", None) or client(ex)
    return download_ohlcv(c, "BTC/USDT", "1m", since, until, cache_dir=cache_dir, progress=False, **kw)


def test_pagination_over_many_pages_returns_the_exact_history(exchange, tmp_path):
    result = download(exchange, cache_dir=tmp_path)
    pd.testing.assert_frame_equal(result.data, BTC, check_freq=False)
    assert result.fetched == 3000 and result.requests == 30
    seen = exchange.requests(KLINES)
    assert len(seen) == 30
    starts = [int(r.params["startTime"]) for r in seen]
    assert starts == [ms(START) + i * 100 * 60_000 for i in range(30)]
    assert all(r.params["limit"] == "100" for r in seen)
    assert result.report.ok
    assert result.path == tmp_path / "binance" / "BTC_USDT-1m.parquet"
    pd.testing.assert_frame_equal(load_ohlcv(result.path), BTC, check_freq=False)


def test_cache_fetches_only_missing_candles(exchange, tmp_path):
    t0 = START + pd.Timedelta(minutes=1000)
    first = download(exchange, t0, t0 + pd.Timedelta(minutes=500), cache_dir=tmp_path)
    assert first.fetched == 500 and len(exchange.requests(KLINES)) == 5
    exchange.clear_requests()
    # overlaps on both sides: 250 candles before and 300 after are missing
    wider = download(exchange, t0 - pd.Timedelta(minutes=250), t0 + pd.Timedelta(minutes=800),
                     cache_dir=tmp_path)
    assert wider.fetched == 550
    seen = [int(r.params["startTime"]) for r in exchange.requests(KLINES)]
    assert seen[0] == ms(t0) - 250 * 60_000 and ms(t0 + pd.Timedelta(minutes=500)) in seen
    assert len(seen) == 3 + 3  # ceil(250/100) before, ceil(300/100) after
    assert all(not (ms(t0) <= s < ms(t0) + 500 * 60_000) for s in seen)
    pd.testing.assert_frame_equal(wider.data, BTC.iloc[750:1800], check_freq=False)
    exchange.clear_requests()
    again = download(exchange, t0, t0 + pd.Timedelta(minutes=600), cache_dir=tmp_path)
    assert again.fetched == 0 and again.requests == 0 and exchange.requests(KLINES) == []
    frame, coverage = read_cache(again.path)
    assert coverage == [(ms(t0) - 250 * 60_000, ms(t0) + 800 * 60_000)]
    assert len(frame) == 1050


def test_still_open_candle_is_never_stored(tmp_path):
    # replay time 30 s into the candle of 01:40: that candle is open
    now = START + pd.Timedelta(minutes=100, seconds=30)
    with LocalExchange({"BTC/USDT": BTC}, start=now, api_keys={API_KEY: SECRET}) as ex:
        c = client(ex)
        raw = c.fetch_ohlcv("BTC/USDT", "1m", since=ms(now) - 90_000, limit=5)
        assert [r[0] for r in raw] == [ms(now) - 90_000, ms(now) - 30_000]  # last one is open
        assert raw[-1][4] != BTC["close"].iloc[100]  # ...and its close is not final
        first = download(ex, cache_dir=tmp_path, ccxt=c)
        assert first.data.index[-1] == START + pd.Timedelta(minutes=99)
        pd.testing.assert_frame_equal(first.data, BTC.iloc[:100], check_freq=False)
        ex.clock.step(5)  # the 01:40 candle closes
        second = download(ex, cache_dir=tmp_path, ccxt=c)
        assert second.fetched == 5
        pd.testing.assert_frame_equal(second.data, BTC.iloc[:105], check_freq=False)


@pytest.mark.parametrize("fault, extra_requests", [
    (lambda f: f.http_error(503, count=2, path=KLINES), 2),
    (lambda f: f.http_error(502, count=1, path=KLINES), 1),
    (lambda f: f.drop_connection(count=2, path=KLINES), 2),
    (lambda f: f.rate_limit(retry_after=0, count=3, path=KLINES), 3),
])
def test_transient_faults_are_retried(exchange, tmp_path, fault, extra_requests):
    fault(exchange.faults)
    result = download(exchange, START, START + pd.Timedelta(minutes=300), cache_dir=tmp_path)
    pd.testing.assert_frame_equal(result.data, BTC.iloc[:300], check_freq=False)
    assert len(exchange.requests(KLINES)) == 3 + extra_requests
    assert result.requests == 3 + extra_requests


def test_retry_after_is_honoured(exchange, tmp_path):
    exchange.faults.rate_limit(retry_after=1, count=1, path=KLINES)
    started = time.monotonic()
    result = download(exchange, START, START + pd.Timedelta(minutes=100), cache_dir=tmp_path,
                      retry=RetryPolicy(max_retries=3, base_delay_s=0.01, max_delay_s=2))
    assert result.fetched == 100
    seen = exchange.requests(KLINES)
    assert [r.status for r in seen] == [429, 200]
    assert seen[1].wall_time - seen[0].wall_time >= 1.0  # backoff alone would be 0.01 s
    assert time.monotonic() - started < 5


MIN = 60_000
OUTLAST = FAST.max_retries + 1  # a fault on this many requests in a row exhausts the retries


def uninterrupted(tmp_path):
    """The same full download on a fresh exchange and cache: the reference to compare with."""
    with LocalExchange({"BTC/USDT": BTC}, api_keys={API_KEY: SECRET}) as ex:
        return download(ex, cache_dir=tmp_path / "reference")


@pytest.mark.parametrize("arm, error", [
    (lambda f: f.http_error(503, count=OUTLAST, path=KLINES), "ExchangeNotAvailable"),
    (lambda f: f.drop_connection(count=OUTLAST, path=KLINES), "NetworkError"),
    (lambda f: f.rate_limit(retry_after=0, count=OUTLAST, path=KLINES), "DDoSProtection"),
])
def test_failure_midway_saves_the_pages_fetched_and_a_rerun_resumes(exchange, tmp_path, arm, error):
    cache = tmp_path / "cache"
    c = client(exchange)
    after_calls(c, "fetch_ohlcv", 7, lambda: arm(exchange.faults))  # 7 pages of 100, then a fault
    with pytest.raises(DownloadError) as info:
        download(exchange, cache_dir=cache, ccxt=c)
    message = str(info.value)
    assert "since 2024-01-01T11:40:00+00:00 failed 4 times in a row" in message and error in message
    assert ("Saved the 700 candle(s) fetched before the failure (up to 2024-01-01T11:39:00+00:00)"
            in message)
    assert ("running the same download (the same command) again resumes from "
            "2024-01-01T11:40:00+00:00") in message
    assert info.value.saved == 700 and info.value.resume_from == ms(START) + 700 * MIN
    assert len(exchange.requests(KLINES)) == 7 + OUTLAST
    frame, coverage = read_cache(info.value.path)
    pd.testing.assert_frame_equal(frame, BTC.iloc[:700], check_freq=False)
    assert coverage == [(ms(START), ms(START) + 700 * MIN)]  # only what was fetched
    exchange.clear_requests()
    again = download(exchange, cache_dir=cache)
    starts = [int(r.params["startTime"]) for r in exchange.requests(KLINES)]
    assert starts == [ms(START) + (700 + 100 * i) * MIN for i in range(23)]  # only the rest
    assert again.fetched == 2300 and again.requests == 23
    reference = uninterrupted(tmp_path)
    pd.testing.assert_frame_equal(again.data, reference.data)
    ref_frame, ref_coverage = read_cache(reference.path)
    frame, coverage = read_cache(again.path)
    pd.testing.assert_frame_equal(frame, ref_frame)
    # up to the last closed candle + 1 ms
    assert coverage == ref_coverage == [(ms(START), ms(START) + 2999 * MIN + 1)]


def test_failure_in_a_later_missing_range_keeps_earlier_ranges_and_the_cache(exchange, tmp_path):
    mid = START + pd.Timedelta(minutes=1000)
    download(exchange, mid, mid + pd.Timedelta(minutes=500), cache_dir=tmp_path)
    c = client(exchange)
    # 10 pages fill [0, 1000), 2 more fetch [1500, 1700), then the exchange fails for good
    after_calls(c, "fetch_ohlcv", 12,
                lambda: exchange.faults.http_error(503, count=None, path=KLINES))
    with pytest.raises(DownloadError, match=r"Saved the 1200 candle\(s\).*resumes from "
                                            r"2024-01-02T04:20:00\+00:00"):
        download(exchange, cache_dir=tmp_path, ccxt=c)
    frame, coverage = read_cache(tmp_path / "binance" / "BTC_USDT-1m.parquet")
    pd.testing.assert_frame_equal(frame, BTC.iloc[:1700], check_freq=False)
    assert coverage == [(ms(START), ms(START) + 1700 * MIN)]
    exchange.faults.clear()
    exchange.clear_requests()
    again = download(exchange, cache_dir=tmp_path)
    assert again.fetched == 1300 and len(exchange.requests(KLINES)) == 13
    pd.testing.assert_frame_equal(again.data, uninterrupted(tmp_path).data)


def test_failure_on_the_first_page_says_nothing_was_saved(exchange, tmp_path):
    exchange.faults.http_error(503, count=None, path=KLINES)
    with pytest.raises(DownloadError,
                       match="No new candle had been fetched, so nothing was saved") as info:
        download(exchange, cache_dir=tmp_path)
    assert info.value.saved == 0 and info.value.resume_from == ms(START)
    assert not (tmp_path / "binance" / "BTC_USDT-1m.parquet").exists()


def test_failure_without_cache_says_nothing_was_kept(exchange, tmp_path):
    c = client(exchange)
    after_calls(c, "fetch_ohlcv", 3,
                lambda: exchange.faults.http_error(503, count=None, path=KLINES))
    with pytest.raises(DownloadError,
                       match=r"300 candle\(s\) had been fetched but the cache is off"):
        download(exchange, cache_dir=tmp_path, ccxt=c, cache=False)
    assert not any(tmp_path.iterdir())


def test_retry_after_beyond_max_delay_stops_at_once_and_keeps_the_pages(exchange, tmp_path):
    c = client(exchange)
    after_calls(c, "fetch_ohlcv", 3,
                lambda: exchange.faults.rate_limit(retry_after=3600, count=1, path=KLINES))
    policy = RetryPolicy(max_retries=3, base_delay_s=0.01, max_delay_s=1.5)
    started = time.monotonic()
    with pytest.raises(DownloadError) as info:
        download(exchange, cache_dir=tmp_path, ccxt=c, retry=policy)
    assert time.monotonic() - started < 10  # not an hour, and not max_delay_s times retries either
    message = str(info.value)
    assert ("fetch_ohlcv BTC/USDT 1m since 2024-01-01T05:00:00+00:00: the exchange is rate "
            "limiting (DDoSProtection) and asks to wait 3600 s (1 h 0 min) (Retry-After)"
            ) in message
    assert "longer than the retry policy allows (max_delay_s=1.5 s)" in message
    assert ("Try again after that wait, or allow longer waits with RetryPolicy(max_delay_s=...)"
            in message)
    assert "Saved the 300 candle(s)" in message and info.value.saved == 300
    assert [r.status for r in exchange.requests(KLINES)] == [200, 200, 200, 429]  # no retry
    frame, coverage = read_cache(info.value.path)
    pd.testing.assert_frame_equal(frame, BTC.iloc[:300], check_freq=False)
    assert coverage == [(ms(START), ms(START) + 300 * MIN)]
    exchange.clear_requests()
    again = download(exchange, cache_dir=tmp_path, retry=policy)
    assert again.fetched == 2700 and len(exchange.requests(KLINES)) == 27
    pd.testing.assert_frame_equal(again.data, BTC, check_freq=False)


def test_retry_after_as_an_http_date():
    from email.utils import format_datetime
    from types import SimpleNamespace

    from framework.download import _retry_after_s

    when = pd.Timestamp.now(tz="UTC") + pd.Timedelta(seconds=120)
    date = format_datetime(when.to_pydatetime(), usegmt=True)
    ex = SimpleNamespace(last_response_headers={"Retry-After": date})
    assert 110 < _retry_after_s(ex, ccxt.RateLimitExceeded("slow down")) <= 120
    ex.last_response_headers = {"Retry-After": "soon"}
    assert _retry_after_s(ex, ccxt.RateLimitExceeded("slow down")) is None
    waits = []
    ex.last_response_headers = {"Retry-After": "90"}

    def limited():
        raise ccxt.RateLimitExceeded("slow down")

    with pytest.raises(DownloadError, match=r"asks to wait 90 s \(Retry-After\).*max_delay_s=60 s"):
        call_with_retries(limited, exchange=ex, sleep=waits.append)
    assert waits == []


def test_error_that_retrying_cannot_fix_midway_keeps_the_pages(exchange, tmp_path):
    c = client(exchange)
    after_calls(c, "fetch_ohlcv", 5, lambda: exchange.faults.http_error(422, count=1, path=KLINES))
    with pytest.raises(ccxt.ExchangeError) as info:
        download(exchange, cache_dir=tmp_path, ccxt=c)
    assert not isinstance(info.value, ccxt.NetworkError) and len(exchange.requests(KLINES)) == 6
    assert any("Saved the 500 candle(s)" in n for n in info.value.__notes__)
    frame, coverage = read_cache(tmp_path / "binance" / "BTC_USDT-1m.parquet")
    pd.testing.assert_frame_equal(frame, BTC.iloc[:500], check_freq=False)
    assert coverage == [(ms(START), ms(START) + 500 * MIN)]


def test_ctrl_c_midway_keeps_the_pages(exchange, tmp_path):
    c = client(exchange)

    def interrupt():
        raise KeyboardInterrupt

    after_calls(c, "fetch_ohlcv", 4, interrupt)
    with pytest.raises(KeyboardInterrupt) as info:
        download(exchange, cache_dir=tmp_path, ccxt=c)
    assert any("Saved the 400 candle(s)" in n for n in info.value.__notes__)
    frame, coverage = read_cache(tmp_path / "binance" / "BTC_USDT-1m.parquet")
    assert len(frame) == 400 and coverage == [(ms(START), ms(START) + 400 * MIN)]


def test_unreadable_cache_file_is_named_and_left_alone(exchange, tmp_path):
    path = tmp_path / "binance" / "BTC_USDT-1m.parquet"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"PAR1 not really parquet")
    with pytest.raises(DownloadError, match=r"the cache file .*BTC_USDT-1m.parquet cannot be read "
                                            r"\(.*\); move it away or delete it"):
        download(exchange, cache_dir=tmp_path)
    assert path.read_bytes() == b"PAR1 not really parquet" and exchange.requests(KLINES) == []


def test_retry_policy_rejects_invalid_parameters():
    with pytest.raises(ValueError, match="max_retries must be a whole number >= 0, got -1"):
        RetryPolicy(max_retries=-1)
    with pytest.raises(ValueError, match="max_delay_s must be a finite number >= 0, got nan"):
        RetryPolicy(max_delay_s=float("nan"))


def test_timeout_from_latency_is_retried(exchange, tmp_path):
    exchange.faults.latency(0.5, count=1, path=KLINES)
    c = client(exchange, timeout=200)  # ms
    result = download(exchange, START, START + pd.Timedelta(minutes=100), cache_dir=tmp_path, ccxt=c)
    assert result.fetched == 100 and len(exchange.requests(KLINES)) == 2


def test_persistent_failure_gives_a_clear_error(exchange, tmp_path):
    exchange.faults.http_error(503, count=None, path=KLINES)
    with pytest.raises(DownloadError, match=r"fetch_ohlcv BTC/USDT 1m since 2024-01-01T00:00:00\+00:00 "
                                            r"failed 4 times in a row; last error: ExchangeNotAvailable"):
        download(exchange, cache_dir=tmp_path)
    assert len(exchange.requests(KLINES)) == 4  # 1 + max_retries


def test_errors_that_retrying_cannot_fix_are_not_retried(exchange, tmp_path):
    c = client(exchange)
    with pytest.raises(DownloadError, match="has no market 'DOGE/USDT'"):
        download_ohlcv(c, "DOGE/USDT", "1m", START, cache_dir=tmp_path, retry=FAST)
    calls = []

    def bad():
        calls.append(1)
        raise ccxt.AuthenticationError("bad key")

    with pytest.raises(ccxt.AuthenticationError):
        call_with_retries(bad, retry=FAST)
    assert len(calls) == 1


def test_backoff_is_exponential():
    waits, calls = [], []

    def flaky():
        calls.append(1)
        if len(calls) < 4:
            raise ccxt.RequestTimeout("slow")
        return "ok"

    policy = RetryPolicy(max_retries=5, base_delay_s=0.5, factor=2, max_delay_s=1.5)
    assert call_with_retries(flaky, retry=policy, sleep=waits.append) == "ok"
    assert waits == [0.5, 1.0, 1.5]


@pytest.mark.parametrize("error", [ccxt.NetworkError, ccxt.RequestTimeout, ccxt.RateLimitExceeded,
                                   ccxt.ExchangeNotAvailable, ccxt.DDoSProtection])
def test_each_network_error_is_retried_a_bounded_number_of_times(error):
    waits, calls = [], []

    def twice_then_ok():
        calls.append(1)
        if len(calls) <= 2:
            raise error("transient")
        return "ok"

    policy = RetryPolicy(max_retries=3, base_delay_s=0.25, factor=3, max_delay_s=10)
    assert call_with_retries(twice_then_ok, retry=policy, sleep=waits.append) == "ok"
    assert waits == [0.25, 0.75] and len(calls) == 3
    waits.clear()
    calls.clear()

    def always():
        calls.append(1)
        raise error("still down")

    with pytest.raises(DownloadError, match=rf"thing failed 4 times in a row; last error: "
                                            rf"{error.__name__}: still down"):
        call_with_retries(always, retry=policy, what="thing", sleep=waits.append)
    assert len(calls) == 4 and waits == [0.25, 0.75, 2.25]


@pytest.mark.parametrize("now, timeframe, last_closed_open", [
    ("2024-01-10 13:30", "1m", "2024-01-10 13:29"),
    ("2024-01-10 13:30", "1h", "2024-01-10 12:00"),
    ("2024-01-10 13:30", "4h", "2024-01-10 08:00"),
    ("2024-01-10 00:00", "1d", "2024-01-09"),
    ("2024-01-10 13:30", "1w", "2024-01-01"),  # a Wednesday: the week of Monday the 8th is open
    ("2024-01-08 00:00", "1w", "2024-01-01"),  # Monday 00:00: the previous week just closed
    ("2024-01-07 23:59", "1w", "2023-12-25"),
    ("2024-03-31 12:00", "1M", "2024-02-01"),  # the March candle is open until April 1st
    ("2024-03-01 00:00", "1M", "2024-02-01"),
    ("2024-02-29 23:00", "1M", "2024-01-01"),
    ("2024-07-15", "3M", "2024-04-01"),
])
def test_closed_candles_end(now, timeframe, last_closed_open):
    end = closed_candles_end(ms(pd.Timestamp(now, tz="UTC")), timeframe)
    assert end == ms(pd.Timestamp(last_closed_open, tz="UTC")) + 1


def test_empty_range_downloads_nothing(exchange, tmp_path):
    # the exchange's clock stands at the end of the data: no closed candle after it
    after = START + pd.Timedelta(minutes=len(BTC) + 10)
    result = download(exchange, after, cache_dir=tmp_path)
    assert result.fetched == 0 and result.requests == 0 and len(result.data) == 0
    assert result.report.ok and exchange.requests(KLINES) == []


def test_candle_gap_is_skipped_and_reported(exchange, tmp_path):
    gap_from, gap_to = START + pd.Timedelta(minutes=150), START + pd.Timedelta(minutes=160)
    exchange.faults.candle_gap(ms(gap_from), ms(gap_to))
    result = download(exchange, START, START + pd.Timedelta(minutes=400), cache_dir=tmp_path)
    expected = BTC.iloc[:400]
    expected = expected[(expected.index < gap_from) | (expected.index >= gap_to)]
    pd.testing.assert_frame_equal(result.data, expected, check_freq=False)
    gaps = [i for i in result.report.errors if i.kind == "gap"]
    assert len(gaps) == 1 and gaps[0].timestamp == gap_from - pd.Timedelta(minutes=1)
    assert "10 candle(s) missing" in gaps[0].detail


def test_rate_limit_spaces_requests(exchange, tmp_path):
    c = client(exchange, rate_limit_ms=100)
    cost = c.describe()["api"]["public"]["get"]["klines"]["cost"]
    download(exchange, START, START + pd.Timedelta(minutes=500), cache_dir=tmp_path, ccxt=c)
    times = [r.wall_time for r in exchange.requests(KLINES)]
    assert len(times) == 5
    # arrival times jitter on a busy machine: judge the whole run, and each gap more loosely
    # (without the limiter, 5 local requests take a few milliseconds)
    assert times[-1] - times[0] >= 0.9 * 4 * 0.100 * cost
    assert min(np.diff(times)) >= 0.5 * 0.100 * cost


def test_download_many_aligns_symbols(exchange, tmp_path):
    aligned = download_many(client(exchange), ["BTC/USDT", "ETH/USDT"], "1m", START, cache_dir=tmp_path,
                            retry=FAST, progress=False)
    assert aligned.index.equals(ETH.index)  # ETH starts later: inner join
    assert (aligned["close"]["BTC/USDT"].to_numpy() == BTC["close"].iloc[500:].to_numpy()).all()
    assert (aligned["close"]["ETH/USDT"].to_numpy() == ETH["close"].to_numpy()).all()


def test_progress_bar_on_request(exchange, tmp_path, capsys):
    download_ohlcv(client(exchange), "BTC/USDT", "1m", START, cache_dir=tmp_path, progress=True,
                   page_limit=1000)
    assert "3000/3000" in capsys.readouterr().err


def test_fetch_cli_writes_cache_and_prints_path(exchange, tmp_path, capsys):
    parser = argparse.ArgumentParser()
    data_cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["data", "fetch", "--exchange", "binance", "--symbol", "BTC/USDT",
                              "--timeframe", "1m", "--since", "2024-01-01", "--until", "2024-01-02",
                              "--exchange-url", exchange.url, "--cache-dir", str(tmp_path)])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    path = tmp_path / "binance" / "BTC_USDT-1m.parquet"
    assert "fetched 1440 new candle(s)" in out and str(path) in out
    pd.testing.assert_frame_equal(load_ohlcv(path), BTC.iloc[:1440], check_freq=False)
    args = parser.parse_args(["data", "fetch", "--exchange", "binance", "--symbol", "NOPE/USDT",
                              "--timeframe", "1m", "--since", "2024-01-01", "--exchange-url",
                              exchange.url, "--cache-dir", str(tmp_path)])
    assert args.func(args) == 1
    assert "no market 'NOPE/USDT'" in capsys.readouterr().err


def test_fetch_cli_keeps_what_it_fetched_and_the_same_command_resumes(exchange, tmp_path, capsys,
                                                                      monkeypatch):
    parser = argparse.ArgumentParser()
    data_cli.register(parser.add_subparsers(dest="command", required=True))
    # the CLI creates its own client: switch the fault on after the first page of 1000 candles
    after_calls(ccxt.binance, "fetch_ohlcv", 1,
                lambda: exchange.faults.rate_limit(retry_after=600, count=1, path=KLINES),
                setattr=monkeypatch.setattr)
    argv = ["data", "fetch", "--exchange", "binance", "--symbol", "BTC/USDT", "--timeframe", "1m",
            "--since", "2024-01-01", "--exchange-url", exchange.url, "--cache-dir", str(tmp_path),
            "--max-delay", "2", "--no-progress"]
    args = parser.parse_args(argv)
    started = time.monotonic()
    assert args.func(args) == 1
    assert time.monotonic() - started < 10
    err = capsys.readouterr().err
    assert "asks to wait 600 s (10 min) (Retry-After)" in err and "--max-delay" in err
    assert "Saved the 1000 candle(s)" in err and "the same command" in err
    monkeypatch.undo()
    args = parser.parse_args(argv)
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "fetched 2000 new candle(s) in 2 request(s); 3000 candle(s) in range" in out
    pd.testing.assert_frame_equal(load_ohlcv(tmp_path / "binance" / "BTC_USDT-1m.parquet"), BTC,
                                  check_freq=False)
    args = parser.parse_args(argv[:-3] + ["--max-delay", "-1"])
    assert args.func(args) == 1
    assert "max_delay_s must be a finite number >= 0" in capsys.readouterr().err


def test_point_exchange_at_keeps_paths():
    ex = point_exchange_at(ccxt.binance(), "http://127.0.0.1:9")
    api = ex.urls["api"]
    assert api["public"] == "http://127.0.0.1:9/api/v3" and api["sapi"] == "http://127.0.0.1:9/sapi/v1"
    assert all(v.startswith("http://127.0.0.1:9/") for v in api.values())
    with pytest.raises(ValueError, match="must look like"):
        point_exchange_at(ccxt.binance(), "127.0.0.1:9")
    with pytest.raises(ValueError, match="unknown ccxt exchange"):
        create_exchange("nosuchexchange")


def test_credentials_from_env_or_a_file_outside_the_repo(tmp_path, monkeypatch):
    monkeypatch.delenv("TRADPAL_CREDENTIALS_FILE", raising=False)
    monkeypatch.setenv("TRADPAL_BINANCE_API_KEY", "k")
    monkeypatch.setenv("TRADPAL_BINANCE_SECRET", "s")
    assert load_credentials("binance") == {"apiKey": "k", "secret": "s"}
    monkeypatch.delenv("TRADPAL_BINANCE_API_KEY")
    creds = tmp_path / "creds.json"
    creds.write_text('{"binance": {"apiKey": "fk", "secret": "fs"}}')
    creds.chmod(0o600)  # a credentials file must be private
    monkeypatch.setenv("TRADPAL_CREDENTIALS_FILE", str(creds))
    assert load_credentials("binance") == {"apiKey": "fk", "secret": "fs"}
    monkeypatch.setenv("TRADPAL_CREDENTIALS_FILE", "data/creds.json")
    with pytest.raises(ValueError, match="inside the repository"):
        load_credentials("binance")
