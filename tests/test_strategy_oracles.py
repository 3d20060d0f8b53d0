"""Every bundled strategy against an independent oracle, trade by trade, on the bundled data.

For each strategy the signal rule is recomputed here from its written description with pandas
rolling windows and plain loops (textbook formulas, not TradPal's streaming kernels), turned
into long/short entries and exits, and run through vectorbt's ``Portfolio.from_signals`` set up
to TradPal's fill rules (``tests/vbt_oracle.py``: next-open fills, stops checked in the entry
bar, trailing from the previous bars, take-profit without slippage, sizing at the decision --
each emulated there, see its docstring). The trades must agree one for one: entry and exit
bar, side, entry and exit price, quantity and pnl.

Excluded explicitly: ``DonchianBreakout.sim_defaults`` (risk sizing and an ATR stop) cannot be
expressed in vectorbt, so Donchian runs here with the settings given (all-in fraction sizing,
percentage stops); risk sizing and ATR stops are checked in ``tests/test_reference_sim.py``.

Tolerances (``tests.vbt_oracle.assert_same_trades``): prices are the same operations in the
same order on both sides (rtol 1e-12); quantities and pnl come from cash booked in a different
order of additions (rtol 1e-9 after hundreds of compounded trades).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from framework.backtest import Backtest
from framework.data import load_ohlcv
from strategies.bollinger_reversion import BollingerReversion
from strategies.donchian_breakout import DonchianBreakout
from strategies.macd_trend import MacdTrend
from strategies.rsi_reversion import RsiReversion
from strategies.sma_cross import SmaCross
from tests.vbt_oracle import assert_same_trades, run_model

DATASETS = ("BTC_USDT-1d", "ETH_USDT-1d", "BTC_USDT-1h", "ETH_USDT-1h")
SETTINGS = {
    # long only, all in, fees: a short signal closes the long
    "long_only": {"fees": 0.001},
    # reversals, slippage, a stop-loss and a target checked from the entry bar on
    "short_stops": {"fees": 0.001, "slippage": 0.0005, "allow_short": True, "sl_pct": 0.04, "tp_pct": 0.08},
    # a trailing stop with a target
    "short_trail": {"fees": 0.0005, "slippage": 0.001, "allow_short": True, "trail_pct": 0.03, "tp_pct": 0.06},
}


# ---------------------------------------------------------------------------------------------
# indicators from their textbook definitions (README "Indicators")
# ---------------------------------------------------------------------------------------------


def seeded_ema(x: np.ndarray, window: int, alpha: float) -> np.ndarray:
    """Exponential smoothing seeded with the plain mean of the first ``window`` values,
    then ``v = v + alpha * (x - v)``; NaN before the seed and while ``x`` is NaN at the start."""
    out = np.full(len(x), np.nan)
    valid = np.flatnonzero(~np.isnan(x))
    if len(valid) < window:
        return out
    start = valid[0]
    v = float(np.mean(x[start:start + window]))
    out[start + window - 1] = v
    for i in range(start + window, len(x)):
        v = v + alpha * (x[i] - v)
        out[i] = v
    return out


def rsi(close: pd.Series, window: int) -> np.ndarray:
    """Wilder's RSI: gains and losses smoothed with alpha = 1/window, seeded with their mean
    over the first ``window`` changes."""
    change = close.diff().to_numpy()
    up = seeded_ema(np.where(np.isnan(change), np.nan, np.maximum(change, 0.0)), window, 1.0 / window)
    down = seeded_ema(np.where(np.isnan(change), np.nan, np.maximum(-change, 0.0)), window, 1.0 / window)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(up + down == 0.0, 50.0, 100.0 * up / (up + down))


def macd_hist(close: pd.Series, fast: int, slow: int, signal: int) -> np.ndarray:
    x = close.to_numpy()
    line = seeded_ema(x, fast, 2.0 / (fast + 1)) - seeded_ema(x, slow, 2.0 / (slow + 1))
    return line - seeded_ema(line, signal, 2.0 / (signal + 1))


def crossings(diff: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(up, down): ``diff`` goes from <= 0 to > 0, or from >= 0 to < 0."""
    prev = np.roll(diff, 1)
    prev[0] = np.nan
    with np.errstate(invalid="ignore"):
        return (prev <= 0) & (diff > 0), (prev >= 0) & (diff < 0)


# ---------------------------------------------------------------------------------------------
# each strategy's rule: (long, short, exit of a long, exit of a short) decided at each close
# ---------------------------------------------------------------------------------------------


def sma_cross_signals(d: pd.DataFrame, fast: int = 10, slow: int = 30):
    diff = (d["close"].rolling(fast).mean() - d["close"].rolling(slow).mean()).to_numpy()
    up, down = crossings(diff)
    return up, down, None, None


def rsi_reversion_signals(d: pd.DataFrame, window: int = 14, lower: float = 30.0, upper: float = 70.0):
    r = rsi(d["close"], window)
    with np.errstate(invalid="ignore"):
        return r < lower, r > upper, None, None


def macd_trend_signals(d: pd.DataFrame, fast: int = 12, slow: int = 26, signal: int = 9):
    up, down = crossings(macd_hist(d["close"], fast, slow, signal))
    return up, down, None, None


def bollinger_reversion_signals(d: pd.DataFrame, window: int = 20, k: float = 2.0):
    close = d["close"]
    mid = close.rolling(window).mean()
    dev = k * close.rolling(window).std(ddof=0)
    c, mid, upper, lower = close.to_numpy(), mid.to_numpy(), (mid + dev).to_numpy(), (mid - dev).to_numpy()
    with np.errstate(invalid="ignore"):
        long, short = c < lower, c > upper
        neither = ~long & ~short & ~np.isnan(mid)
        # back to the middle band: a long exits at or above it, a short at or below it
        return long, short, neither & (c >= mid), neither & (c <= mid)


def donchian_breakout_signals(d: pd.DataFrame, entry_window: int = 20, exit_window: int = 10):
    # the channels of the bars before this one: a breakout is a close beyond them
    up = d["high"].rolling(entry_window).max().shift(1).to_numpy()
    lo = d["low"].rolling(entry_window).min().shift(1).to_numpy()
    exit_up = d["high"].rolling(exit_window).max().shift(1).to_numpy()
    exit_lo = d["low"].rolling(exit_window).min().shift(1).to_numpy()
    c = d["close"].to_numpy()
    with np.errstate(invalid="ignore"):
        long, short = c > up, c < lo
        neither = ~long & ~short
        return long, short, neither & (c < exit_lo), neither & (c > exit_up)


ORACLES = {
    "sma_cross": (SmaCross, sma_cross_signals),
    "rsi_reversion": (RsiReversion, rsi_reversion_signals),
    "macd_trend": (MacdTrend, macd_trend_signals),
    "bollinger_reversion": (BollingerReversion, bollinger_reversion_signals),
    "donchian_breakout": (DonchianBreakout, donchian_breakout_signals),
}

# fewer trades than this and the comparison would prove little
MIN_TRADES = {"1d": 5, "1h": 100}


@pytest.fixture(scope="module")
def datasets() -> dict[str, pd.DataFrame]:
    return {name: load_ohlcv(name) for name in DATASETS}


def oracle_trades(data: pd.DataFrame, signals, settings: dict) -> pd.DataFrame:
    long, short, long_exit, short_exit = (None if s is None else np.asarray(s, dtype=bool) for s in signals)
    none = np.zeros_like(long)
    long_exit = none if long_exit is None else long_exit
    short_exit = none if short_exit is None else short_exit
    allow_short = settings.get("allow_short", False)
    if not allow_short:
        long_exit = long_exit | short  # long only: a short signal closes the long
    def col(a):
        return a[:, None]
    prices = [data[f].to_numpy()[:, None] for f in ("open", "high", "low", "close")]
    model = run_model(
        *prices, col(long), col(short), col(long_exit), col(short_exit),
        init_cash=10_000.0, **settings,
    )
    return model.records


@pytest.mark.parametrize("setting", list(SETTINGS))
@pytest.mark.parametrize("strategy", list(ORACLES))
def test_strategy_matches_independent_oracle(datasets, strategy, setting):
    cls, rule = ORACLES[strategy]
    settings = SETTINGS[setting]
    # Donchian's default risk sizing and ATR stop are not expressible in vectorbt (see above)
    overrides = {"sizing": "fraction", "size": 1.0, "sl_atr": None} if cls is DonchianBreakout else {}
    for name, data in datasets.items():
        label = f"{strategy} on {name}, {setting}"
        res = Backtest(cls(), data, init_cash=10_000.0, **overrides, **settings).run()
        theirs = oracle_trades(data, rule(data), settings)
        assert len(theirs) >= MIN_TRADES[name[-2:]], f"{label}: only {len(theirs)} trades"
        assert_same_trades(res.trade_records, theirs, label)
        if settings.get("allow_short"):
            assert (theirs["direction"] < 0).any(), f"{label}: no short trade to compare"
