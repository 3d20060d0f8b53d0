"""``BacktestResult.to_vectorbt``: vectorbt replaying TradPal's fills gets TradPal's equity."""

import numpy as np
import pytest

from framework.backtest import Backtest
from framework.enums import REASON_END


def _closed_trades(result) -> int:
    return int((result.trade_records["exit_reason"] != REASON_END).sum())


@pytest.mark.parametrize("data, settings", [
    ("BTC_USDT-1d", dict(allow_short=True, sl_pct=0.05, tp_pct=0.1, slippage=0.0005)),
    ({"BTC": "BTC_USDT-1d", "ETH": "ETH_USDT-1d"},
     dict(cash_sharing=True, size=0.5, allow_short=True, sl_pct=0.05)),
])
def test_vectorbt_portfolio_has_tradpals_equity_returns_and_trades(data, settings):
    result = Backtest("sma_cross", data, **settings).run()
    assert (result.fills["reason"] != "signal").any()  # stops fire, several fills per bar occur
    assert (result.trades["side"] == "short").any()
    pf = result.to_vectorbt()
    value = np.asarray(pf.value()).reshape(-1)
    np.testing.assert_allclose(value, result.equity.to_numpy(), rtol=1e-9)
    tradpal_returns = result.equity.pct_change().to_numpy()[1:]
    np.testing.assert_allclose(np.asarray(pf.returns()).reshape(-1)[1:], tradpal_returns,
                               rtol=1e-9, atol=1e-12)
    assert int(np.asarray(pf.trades.closed.count()).sum()) == _closed_trades(result)
    assert len(pf.orders.records) == len(result.fills)


def test_without_vectorbt_the_error_says_what_to_install(monkeypatch):
    import sys

    import framework

    result = Backtest("sma_cross", "BTC_USDT-1d", end="2020-06-01").run()
    monkeypatch.setitem(sys.modules, "vectorbt", None)  # import vectorbt raises ImportError
    monkeypatch.delitem(sys.modules, "framework.vbt_bridge", raising=False)
    monkeypatch.delattr(framework, "vbt_bridge", raising=False)
    with pytest.raises(ImportError, match=r"to_vectorbt\(\) needs vectorbt.*tradpal\[research\]"):
        result.to_vectorbt()
