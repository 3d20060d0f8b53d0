"""Plotly charts of backtests, sweeps and risk: each function returns a ``plotly`` Figure.

    from framework import Backtest, plots
    result = Backtest("sma_cross", "BTC_USDT-1d").run()
    result.plot()                                  # price, indicators, trades, equity, drawdown, exposure
    plots.heatmap(sweep_table, "fast", "slow", "sharpe")
    plots.monte_carlo_fan(risk.monte_carlo(result, "block", keep_paths=True, seed=1), result)

Every trace holds the result's own numbers (no resampling), so a figure can be checked against
``result.equity``, ``result.drawdown``, ``result.orders``. Fractions (returns, drawdowns, VaR)
are plotted as fractions with percent tick labels.

In a Jupyter kernel, importing this module switches plotly's default renderer from
``plotly_mimetype`` to ``plotly_mimetype+notebook``: JupyterLab still draws the figure from its
JSON, and the extra HTML output (plotly.js embedded once per notebook) is what
``jupyter nbconvert --to html`` keeps, so the charts survive the export. A renderer set by the
user (``PLOTLY_RENDERER`` or ``plotly.io.renderers.default``) is left alone.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio
from plotly.subplots import make_subplots

from framework import indicators, metrics

if TYPE_CHECKING:
    from framework.backtest import BacktestResult, BenchmarkInput
    from framework.risk import MonteCarloResult

log = logging.getLogger(__name__)

# only inside a kernel: plotly's renderers module imports nbformat and jsonschema, seconds of
# start-up that a command-line run does not need
if "ipykernel" in sys.modules and pio.renderers.default == "plotly_mimetype":  # plotly's pick there
    pio.renderers.default = "plotly_mimetype+notebook"

PRICE_FIELDS = ("open", "high", "low", "close", "volume")
# indicators in price units, drawn over the price, with the components that are (the others,
# oscillators such as rsi or macd, get a panel of their own with all their components)
_ON_PRICE: dict[str, tuple[str, ...] | None] = {
    "sma": None, "ema": None, "wma": None, "vwap": None,
    "bbands": ("mid", "upper", "lower"),
    "donchian": ("upper", "lower"),
    "support_resistance": ("support", "resistance"),
}
_BUY, _SELL = "#2ca02c", "#d62728"
_STRATEGY_COLOR, _BENCH_COLOR = "#1f77b4", "#7f7f7f"


@dataclass(frozen=True)
class Benchmark:
    """Buy-and-hold equity to compare a backtest with, on the same starting cash and fees."""

    name: str
    equity: pd.Series
    stats: dict[str, object]


def benchmark_for(result: BacktestResult, data: BenchmarkInput | None = None, *,
                  policy: str = "raise", calendar: str = "auto") -> Benchmark:
    """The backtest's own benchmark (``result.benchmark``) when ``data`` is None, else the
    benchmark ``data`` names, resolved as ``Backtest(benchmark=data)`` does
    (``framework.backtest.resolve_benchmark``: an instrument of the run, a dataset, path or
    OHLCV frame bought and held with the run's fees, slippage and starting cash, or a Series
    of prices or returns) over the traded bars it shares with the backtest.

    Raises:
        ValueError: ``data`` is several instruments or shares fewer than 2 bars with the backtest.
    """
    from framework.backtest import resolve_benchmark

    if data is None:
        return Benchmark(result.benchmark_name, result.benchmark[0], result.benchmark_stats)
    curve = resolve_benchmark(data, result.frames, result.settings, result.trade_from,
                              policy=policy, calendar=calendar)
    held = dataclasses.replace(result, benchmark_curve=curve)
    return Benchmark(curve.name, curve.equity, held.benchmark_stats)


# --- backtest ---------------------------------------------------------------------------------


def strategy_indicators(result: BacktestResult, instrument: str | None = None
                        ) -> list[tuple[str, pd.Series, bool]]:
    """The strategy's declared ``indicators`` (``"sma(close, fast)"``) computed with
    ``framework.indicators`` on one instrument: ``(label, series, on_price)`` per line.

    A declaration naming no function of ``framework.indicators``, or an argument that is no
    price field, parameter or number, is skipped (logged): these charts are for reading.
    """
    frame = result.frames[_instrument(result, instrument)]
    params = result.strategy.params
    lines = []
    for text in result.strategy.indicators:
        match = re.fullmatch(r"\s*(\w+)\s*\((.*)\)\s*", text)
        func = getattr(indicators, match.group(1), None) if match else None
        if func is None or match.group(1).startswith("_"):
            log.info("plot: skipped indicator %r (no such function in framework.indicators)", text)
            continue
        args, shown = [], []
        for arg in (a.strip() for a in match.group(2).split(",") if a.strip()):
            if arg in PRICE_FIELDS and arg in frame:
                args.append(frame[arg])
                shown.append(arg)
            elif arg in params:
                args.append(params[arg])
                shown.append(f"{params[arg]:g}")
            else:
                try:
                    args.append(int(arg) if re.fullmatch(r"-?\d+", arg) else float(arg))
                    shown.append(arg)
                except ValueError:
                    log.info("plot: skipped indicator %r (unknown argument %r)", text, arg)
                    break
        else:
            name = match.group(1)
            label = f"{name}({', '.join(shown)})"
            out = func(*args)
            on_price = name in _ON_PRICE
            if isinstance(out, tuple):  # a NamedTuple of components
                keep = _ON_PRICE.get(name) or out._fields
                lines += [(f"{label} {f}", getattr(out, f), on_price) for f in keep]
            else:
                lines.append((label, out, on_price))
    return lines


def plot(result: BacktestResult, instrument: str | None = None,
         benchmark: Benchmark | BenchmarkInput | None = None, *, indicators: bool = True) -> go.Figure:
    """Price with the strategy's indicators and its fills, equity against a benchmark,
    drawdown (underwater) and exposure, on one shared time axis.

    Args:
        instrument: which instrument's price and fills (default the first); multi-instrument
            runs have one chart per instrument (equity and drawdown are the whole portfolio's).
        benchmark: a ``Benchmark`` or what ``benchmark_for`` takes (default: the result's own,
            ``result.benchmark``).
        indicators: draw the strategy's declared indicators.

    Rows: price (close, indicators in price units, buys as green triangles up and sells as red
    triangles down at their fill prices); oscillators when the strategy has some; equity
    (strategy and benchmark); drawdown, ``equity / running peak - 1``; exposure, the position's
    signed value as a fraction of equity.
    """
    name = _instrument(result, instrument)
    bench = benchmark if isinstance(benchmark, Benchmark) else benchmark_for(result, benchmark)
    lines = strategy_indicators(result, name) if indicators else []
    oscillators = [ln for ln in lines if not ln[2]]
    titles = [f"{name} price and fills"] + (["Indicators"] if oscillators else []) + [
        f"Equity: {result.strategy.label()} vs {bench.name}", "Drawdown", "Exposure (position value / equity)"]
    heights = [0.4] + ([0.15] if oscillators else []) + [0.25, 0.12, 0.12]
    fig = make_subplots(rows=len(titles), cols=1, shared_xaxes=True, vertical_spacing=0.04,
                        subplot_titles=titles, row_heights=heights)
    frame = result.frames[name]
    fig.add_trace(go.Scatter(x=frame.index, y=frame["close"], name=f"{name} close",
                             line={"color": "#444", "width": 1}), row=1, col=1)
    for label, series, on_price in lines:
        fig.add_trace(go.Scatter(x=series.index, y=series, name=label, line={"width": 1}),
                      row=1 if on_price else 2, col=1)
    orders = result.fills[result.fills["instrument"] == name]
    for side, symbol, color in (("buy", "triangle-up", _BUY), ("sell", "triangle-down", _SELL)):
        part = orders[orders["side"] == side]
        fig.add_trace(go.Scatter(
            x=part["time"], y=part["price"], mode="markers", name=side,
            marker={"symbol": symbol, "color": color, "size": 9, "line": {"width": 0.5, "color": "#000"}},
            customdata=np.column_stack([part["qty"], part["reason"]]) if len(part) else None,
            hovertemplate=f"{side} %{{customdata[0]:.6g}} @ %{{y:,.2f}}<br>%{{customdata[1]}}<extra></extra>",
        ), row=1, col=1)
    row = 3 if oscillators else 2
    fig.add_trace(go.Scatter(x=result.equity.index, y=result.equity, name=result.strategy.label(),
                             line={"color": _STRATEGY_COLOR}), row=row, col=1)
    fig.add_trace(go.Scatter(x=bench.equity.index, y=bench.equity, name=bench.name,
                             line={"color": _BENCH_COLOR, "dash": "dot"}), row=row, col=1)
    fig.add_trace(go.Scatter(x=result.drawdown.index, y=result.drawdown, name="drawdown",
                             fill="tozeroy", line={"color": _SELL, "width": 1}), row=row + 1, col=1)
    fig.add_trace(go.Scatter(x=result.index, y=exposure(result, name), name="exposure",
                             line={"color": "#9467bd", "width": 1, "shape": "hv"}), row=row + 2, col=1)
    fig.update_yaxes(type="log", dtick="D2", row=row, col=1)  # growth rates compare as slopes
    fig.update_yaxes(tickformat=".0%", row=row + 1, col=1)
    fig.update_yaxes(tickformat=".0%", row=row + 2, col=1)
    fig.update_layout(height=250 * len(titles) + 150, hovermode="x unified", template="plotly_white",
                      title=f"{result.strategy!r} on {name}", legend={"orientation": "h", "y": -0.05})
    return fig


def exposure(result: BacktestResult, instrument: str) -> pd.Series:
    """Signed value of the position in ``instrument`` at each close, as a fraction of equity."""
    value = result.positions[instrument] * result.frames[instrument]["close"]
    return (value / result.equity).rename("exposure")


def monthly_returns(equity: pd.Series) -> pd.DataFrame:
    """Calendar-month returns of an equity curve: one row per year, columns 1..12 (fractions;
    NaN for months outside the data). The first month runs from the first bar's equity."""
    _check_series(equity, "equity")
    month_end = equity.resample("ME").last().dropna()
    start = pd.concat([pd.Series([equity.iloc[0]]), month_end.iloc[:-1]]).to_numpy()
    rets = pd.Series(month_end.to_numpy() / start - 1.0, index=month_end.index)
    table = pd.DataFrame({"year": rets.index.year, "month": rets.index.month, "ret": rets.to_numpy()})
    out = table.pivot(index="year", columns="month", values="ret")
    return out.reindex(columns=range(1, 13))


def monthly_heatmap(equity: pd.Series, title: str = "Monthly returns") -> go.Figure:
    """``monthly_returns`` as a red-green heatmap, each cell labelled in percent."""
    table = monthly_returns(equity)
    months = [pd.Timestamp(2000, m, 1).strftime("%b") for m in table.columns]
    limit = float(np.nanmax(np.abs(table.to_numpy()))) if table.notna().any().any() else 1.0
    fig = go.Figure(go.Heatmap(
        z=table.to_numpy(), x=months, y=[str(y) for y in table.index], colorscale="RdYlGn",
        zmid=0, zmin=-limit, zmax=limit, texttemplate="%{z:.1%}", hovertemplate="%{y} %{x}: %{z:.2%}<extra></extra>",
        colorbar={"tickformat": ".0%"},
    ))
    fig.update_yaxes(autorange="reversed", type="category")
    fig.update_layout(title=title, height=120 + 32 * len(table), template="plotly_white")
    return fig


# --- sweeps -----------------------------------------------------------------------------------


def heatmap(table: pd.DataFrame, x: str, y: str, metric: str = "sharpe") -> go.Figure:
    """A sweep table (``framework.sweep.sweep``) as a heatmap of ``metric`` over parameters
    ``x`` (columns) and ``y`` (rows).

    Raises:
        ValueError: a name that is not a column of the table, or several rows per (x, y) pair
            (other parameters vary too: filter the table to one value of each first).
    """
    for key, col in (("x", x), ("y", y), ("metric", metric)):
        if col not in table.columns:
            raise ValueError(f"{key}={col!r} is not a column of the table; columns: {', '.join(map(str, table.columns))}")
    dup = table.duplicated([x, y])
    if dup.any():
        others = [c for c in table.columns if c not in (x, y, metric)]
        raise ValueError(
            f"the table has several rows per ({x}, {y}) pair; other columns vary too ({', '.join(map(str, others))}): "
            f"keep one value of each first, e.g. table[table[name] == value]"
        )
    grid = table.pivot(index=y, columns=x, values=metric).sort_index().sort_index(axis=1)
    fig = go.Figure(go.Heatmap(
        z=grid.to_numpy(dtype=float), x=[str(v) for v in grid.columns], y=[str(v) for v in grid.index],
        colorscale="Viridis", colorbar={"title": metric},
        hovertemplate=f"{x}=%{{x}}<br>{y}=%{{y}}<br>{metric}=%{{z:.4g}}<extra></extra>",
    ))
    fig.update_xaxes(title=x, type="category")
    fig.update_yaxes(title=y, type="category")
    fig.update_layout(title=f"{metric} by {x} and {y}", template="plotly_white")
    return fig


# --- risk -------------------------------------------------------------------------------------


def monte_carlo_fan(mc: MonteCarloResult, actual: BacktestResult | pd.Series | None = None,
                    confidence: float = 0.90) -> go.Figure:
    """Fan chart of Monte Carlo equity paths (start 1.0): the median and the central
    ``confidence`` band per step (``mc.equity_bands``; needs ``keep_paths=True``), with the
    actual equity divided by its start over the same steps when ``actual`` is given (a block
    bootstrap has one step per bar after the first)."""
    bands = mc.equity_bands(confidence)
    steps = bands.index
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=steps, y=bands["upper"], name=f"{confidence:.0%} band upper",
                             line={"width": 0, "color": _STRATEGY_COLOR}, showlegend=False))
    fig.add_trace(go.Scatter(x=steps, y=bands["lower"], name=f"{confidence:.0%} band",
                             fill="tonexty", fillcolor="rgba(31,119,180,0.2)",
                             line={"width": 0, "color": _STRATEGY_COLOR}))
    fig.add_trace(go.Scatter(x=steps, y=bands["median"], name="median path",
                             line={"color": _STRATEGY_COLOR}))
    if actual is not None:
        equity = actual.equity if not isinstance(actual, pd.Series) else actual
        path = (equity / equity.iloc[0]).to_numpy()[1:][: len(steps)]
        fig.add_trace(go.Scatter(x=steps[: len(path)], y=path, name="actual", line={"color": "#000", "width": 1}))
    fig.update_layout(title=f"Monte Carlo ({mc.method} bootstrap, {len(mc.paths):,} paths): equity, start 1.0",
                      xaxis_title="step", template="plotly_white", height=420)
    fig.update_yaxes(type="log", dtick="D2")  # 1, 2, 5 per decade: readable over wide fans
    return fig


def rolling_risk(result: BacktestResult, window: int | None = None, confidence: float = 0.95
                 ) -> go.Figure:
    """Rolling historical VaR and ES (positive loss fractions, ``framework.risk.rolling_var_es``)
    and rolling Sharpe ratio (annualised, excess over the risk-free rate, ``ddof=1``) of the
    equity's bar returns over ``window`` bars (default a quarter of a year, at most half the
    returns, at least 2)."""
    from framework import risk

    returns = result.equity.pct_change().iloc[1:]
    window = default_window(result) if window is None else window
    var_es = risk.rolling_var_es(returns, window, confidence)
    sharpe = rolling_sharpe(returns, window, result.ann_factor, result.risk_free)
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.08, subplot_titles=(
        f"Rolling {confidence:.0%} one-bar VaR and ES ({window} bars)", f"Rolling Sharpe ratio ({window} bars)"))
    fig.add_trace(go.Scatter(x=var_es.index, y=var_es["var"], name="VaR", line={"color": "#ff7f0e"}), row=1, col=1)
    fig.add_trace(go.Scatter(x=var_es.index, y=var_es["es"], name="ES", line={"color": _SELL}), row=1, col=1)
    fig.add_trace(go.Scatter(x=sharpe.index, y=sharpe, name="Sharpe", line={"color": _STRATEGY_COLOR}), row=2, col=1)
    fig.update_yaxes(tickformat=".1%", row=1, col=1)
    fig.update_layout(height=520, template="plotly_white", hovermode="x unified")
    return fig


def default_window(result: BacktestResult) -> int:
    """Rolling window of the report: a quarter of a year of bars, at most half the returns."""
    return int(max(2, min(round(result.ann_factor / 4), (len(result.index) - 1) // 2)))


def rolling_sharpe(returns: pd.Series, window: int, ann_factor: float, risk_free: float = 0.0) -> pd.Series:
    """Annualised Sharpe ratio of the last ``window`` returns at each bar (NaN before the first
    full window and where the returns do not vary)."""
    excess = returns - metrics.risk_free_per_bar(risk_free, ann_factor)
    roll = excess.rolling(window)
    std = roll.std(ddof=1)
    return (roll.mean() / std.where(std > 0) * np.sqrt(ann_factor)).rename("sharpe")


# --- helpers ----------------------------------------------------------------------------------


def _instrument(result: BacktestResult, instrument: str | None) -> str:
    if instrument is None:
        return result.columns[0]
    if instrument not in result.frames:
        raise ValueError(f"instrument={instrument!r} is not in the backtest; instruments: {', '.join(result.columns)}")
    return instrument


def _check_series(series: Any, name: str) -> None:
    if not (isinstance(series, pd.Series) and isinstance(series.index, pd.DatetimeIndex) and len(series)):
        raise TypeError(f"{name} must be a non-empty pandas Series on a DatetimeIndex, got {type(series).__name__}")

