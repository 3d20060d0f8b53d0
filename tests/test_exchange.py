"""framework.exchange: retry jitter, the configurable give-up error, credentials that never show."""

from __future__ import annotations

import random
import traceback

import ccxt
import pytest

from framework.download import DownloadError
from framework.exchange import (
    Credentials,
    ExchangeAccessError,
    RetryPolicy,
    call_with_retries,
    create_exchange,
    load_credentials,
)


def take(policy: RetryPolicy, n: int, seed: int = 3) -> list[float]:
    delays = policy.delays(random.Random(seed))
    return [next(delays) for _ in range(n)]


def test_no_jitter_is_the_plain_exponential():
    assert take(RetryPolicy(base_delay_s=1, factor=2, max_delay_s=5), 5) == [1, 2, 4, 5, 5]


def test_full_jitter_draws_uniformly_below_each_exponential_delay():
    policy = RetryPolicy(base_delay_s=1, factor=2, max_delay_s=5, jitter="full")
    reference = random.Random(3)
    assert take(policy, 5) == [reference.uniform(0, d) for d in (1, 2, 4, 5, 5)]
    waits = take(policy, 200, seed=11)
    assert all(0 <= w <= min(5, 2**i) for i, w in enumerate(waits))
    assert len(set(waits)) == 200  # spread out, not in step


def test_decorrelated_jitter_grows_from_the_previous_wait():
    policy = RetryPolicy(base_delay_s=0.5, factor=3, max_delay_s=4, jitter="decorrelated")
    waits = take(policy, 300)
    previous = 0.5
    for w in waits:
        assert 0.5 <= w <= min(4, max(0.5, previous * 3))
        previous = w
    assert max(waits) > 3.5  # reaches the cap region


def test_bad_jitter_is_named():
    with pytest.raises(ValueError, match="jitter must be one of 'none', 'full', 'decorrelated', "
                                         "got 'some'"):
        RetryPolicy(jitter="some")


class BrokerLikeError(ExchangeAccessError):
    pass


def test_call_with_retries_uses_the_jitter_and_the_callers_error():
    waits = []

    def always():
        raise ccxt.RequestTimeout("slow")

    policy = RetryPolicy(max_retries=3, base_delay_s=1, factor=2, max_delay_s=10, jitter="full")
    with pytest.raises(BrokerLikeError, match="thing failed 4 times in a row"):
        call_with_retries(always, retry=policy, what="thing", sleep=waits.append,
                          rng=random.Random(5), error=BrokerLikeError)
    assert waits == take(policy, 3, seed=5)
    assert issubclass(DownloadError, ExchangeAccessError)


def test_credentials_never_show_their_values(tmp_path, monkeypatch):
    monkeypatch.delenv("TRADPAL_CREDENTIALS_FILE", raising=False)
    monkeypatch.setenv("TRADPAL_BINANCE_API_KEY", "the-key-value")
    monkeypatch.setenv("TRADPAL_BINANCE_SECRET", "the-secret-value")
    creds = load_credentials("binance")
    assert creds == {"apiKey": "the-key-value", "secret": "the-secret-value"}
    shown = repr(creds) + str(creds) + f"{creds}" + repr([creds])
    assert "the-secret-value" not in shown and "the-key-value" not in shown
    assert repr(creds) == "Credentials(apiKey=***, secret=***)"
    exchange = create_exchange("binance", credentials=True)
    assert exchange.secret == "the-secret-value" and "the-secret-value" not in repr(exchange)


def test_a_broken_credentials_file_is_named_without_its_content(tmp_path, monkeypatch):
    monkeypatch.delenv("TRADPAL_BINANCE_API_KEY", raising=False)
    path = tmp_path / "creds.json"
    path.write_text('{"binance": {"apiKey": "k", "secret": "the-secret-value"')  # cut short
    path.chmod(0o600)  # a credentials file must be private
    monkeypatch.setenv("TRADPAL_CREDENTIALS_FILE", str(path))
    with pytest.raises(ValueError, match="is not valid JSON") as info:
        load_credentials("binance")
    assert "the-secret-value" not in "".join(traceback.format_exception(info.value))
    path.write_text('{"binance": ["the-secret-value"]}')
    with pytest.raises(ValueError, match="expected") as info:
        load_credentials("binance")
    assert "the-secret-value" not in "".join(traceback.format_exception(info.value))
    monkeypatch.setenv("TRADPAL_CREDENTIALS_FILE", str(tmp_path / "missing.json"))
    with pytest.raises(ValueError, match="missing.json cannot be read"):
        load_credentials("binance")
    path.write_text('{"kraken": {"apiKey": "k", "secret": "s"}}')
    monkeypatch.setenv("TRADPAL_CREDENTIALS_FILE", str(path))
    none = load_credentials("binance")
    assert none == {} and isinstance(none, Credentials)
