"""The HTML tear sheet of a backtest: ``result.to_html(path)`` and ``tradpal report``.

One self-contained file (plotly.js embedded once, so it opens offline): settings, the statistics
beside the benchmark, the charts of ``framework.plots``, monthly returns, the risk section (VaR
and ES, rolling VaR and Sharpe, a Monte Carlo block bootstrap, stress tests) and the trades.

    tradpal report sma_cross --data BTC_USDT-1d --benchmark ETH_USDT-1d --out report.html
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import html
import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import plotly.graph_objects as go
import plotly.io as pio
from plotly.offline import get_plotlyjs

from framework import metrics, plots

if TYPE_CHECKING:
    from framework.backtest import Backtest, BacktestResult, BenchmarkCurve, BenchmarkInput

MAX_TRADES = 500  # rows of the trades table (the newest are dropped beyond it, with a note)
MC_SEED = 20240101  # a fixed seed: the same backtest gives the same report
_SIGNED = ("total_return", "cagr", "expectancy")  # stats coloured by their sign
_MC_CELLS = 20_000_000  # paths x steps kept for the fan chart (160 MB of float64)

# records script errors into the page, for the headless-browser test and for a reader
_ERROR_HOOK = """<script>
window.addEventListener("error", function (e) {
  var box = document.getElementById("tp-errors");
  box.textContent += (e.message || String(e)) + "\\n";
  box.hidden = false;
});
</script>"""

_CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 24px auto;
       max-width: 1300px; color: #222; padding: 0 16px; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ddd; margin-top: 1.6em; }
.sub { color: #666; margin-top: 0; }
table { border-collapse: collapse; font-size: 0.92em; margin: 0.5em 0; }
th, td { padding: 3px 10px; border-bottom: 1px solid #eee; text-align: right; }
th:first-child, td:first-child { text-align: left; }
thead th { background: #f5f5f5; }
.cols { display: flex; flex-wrap: wrap; gap: 32px; align-items: flex-start; }
.neg { color: #c0392b; } .pos { color: #1e8449; }
.scroll { max-height: 480px; overflow-y: auto; }
#tp-errors { color: #c0392b; white-space: pre; }
.note { color: #666; font-size: 0.9em; }
"""


@dataclasses.dataclass
class _Page:
    """Sections of the report; figures are rendered without plotly.js (it is in the head)."""

    parts: list[str] = dataclasses.field(default_factory=list)
    n_charts: int = 0

    def add(self, text: str) -> None:
        self.parts.append(text)

    def figure(self, fig: go.Figure) -> None:
        self.n_charts += 1
        self.parts.append(pio.to_html(fig, full_html=False, include_plotlyjs=False,
                                      div_id=f"tp-chart-{self.n_charts}",
                                      config={"displaylogo": False, "responsive": True}))


def to_html(result: BacktestResult, path: str | Path | None = None, *,
            benchmark: plots.Benchmark | BenchmarkInput | None = None, title: str | None = None,
            data_name: str | None = None, stress: bool = True) -> str:
    """The tear sheet of ``result`` as one HTML page; written to ``path`` when given.

    Args:
        benchmark: a ``plots.Benchmark`` or what ``Backtest(benchmark=)`` takes (default:
            the result's own benchmark, ``result.benchmark``).
        title: page title (default the strategy and the instruments).
        data_name: how the data is named in the settings (default the instruments).
        stress: include the stress tests (``framework.stress.stress_test`` with the run's
            strategy, data and settings: the default historical episodes and shocks).
    """
    bench = benchmark if isinstance(benchmark, plots.Benchmark) else plots.benchmark_for(result, benchmark)
    name = title or f"{result.strategy!r} on {', '.join(result.columns)}"
    page = _Page()
    idx = result.index
    page.add(f"<h1>{_e(name)}</h1><p class='sub'>{len(idx):,} bars, {idx[0]:%Y-%m-%d %H:%M} to "
             f"{idx[-1]:%Y-%m-%d %H:%M} UTC; benchmark: {_e(bench.name)}; generated "
             f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC</p>")
    page.add("<h2>Statistics</h2><div class='cols'>")
    page.add(_stats_table(result, bench))
    page.add(_comparison_table(result, bench))
    page.add(_settings_table(result, data_name))
    page.add("</div>")

    page.add("<h2>Charts</h2>")
    for instrument in result.columns:
        page.figure(plots.plot(result, instrument, bench))
    page.add("<h2>Monthly returns</h2>")
    page.figure(plots.monthly_heatmap(result.equity, f"Monthly returns: {result.strategy.label()}"))
    page.figure(plots.monthly_heatmap(bench.equity, f"Monthly returns: {bench.name}"))

    page.add("<h2>Risk</h2>")
    page.add(_var_table(result, bench))
    page.figure(plots.rolling_risk(result))
    mc = _monte_carlo(result)
    page.add(f"<h3>Monte Carlo: block bootstrap of bar returns</h3><p class='note'>{len(mc.paths):,} "
             f"paths of {mc.n_steps:,} bars (stationary bootstrap, mean block 20 bars, seed {mc.seed}); "
             "median and 90 % band; probabilities with their Wilson interval.</p>")
    page.add(_mc_table(mc))
    page.figure(plots.monte_carlo_fan(mc, result))
    if stress:
        page.add("<h3>Stress tests</h3><p class='note'>The strategy replayed through historical "
                 "episodes in the data (200 warm-up bars before each, trading from its start) and "
                 "over the whole history with hypothetical shocks: a 20 % gap down at the middle "
                 "bar, volatility x2, every instrument following the first (correlation 1). "
                 "Return and drawdown of the strategy's equity over the traded bars; risk limits "
                 "fired: fills for max drawdown, daily loss, emergency stop or liquidation.</p>")
        page.add(_stress_table(result))

    page.add("<h2>Trades</h2>")
    page.add(_trades_table(result))
    text = _document(name, page)
    if path is not None:
        Path(path).write_text(text, encoding="utf-8")
    return text


def _document(title: str, page: _Page) -> str:
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>{_e(title)}</title><style>{_CSS}</style>{_ERROR_HOOK}"
        f"<script type='text/javascript'>{get_plotlyjs()}</script></head><body>"
        "<div id='tp-errors' hidden></div>"
        + "\n".join(page.parts) + "</body></html>\n"
    )


# --- sections ---------------------------------------------------------------------------------


def _stats_table(result: BacktestResult, bench: plots.Benchmark) -> str:
    frame = metrics.stats_frame(result.stats, bench.stats, (result.strategy.label(), bench.name))
    rows = []
    for key, values in frame.iterrows():
        label, kind = metrics.STATS_FIELDS.get(key, (str(key), "auto"))
        rows.append((label, *(_cell(v, kind, key in _SIGNED) for v in values)))
    return _table(["", result.strategy.label(), bench.name], rows, "tp-stats")


def _comparison_table(result: BacktestResult, bench: plots.Benchmark) -> str:
    from framework import risk

    comp = risk.benchmark_comparison(result, bench.equity.pct_change().iloc[1:])
    kinds = {"alpha": "pct", "tracking_error": "pct", "up_capture": "ratio", "down_capture": "ratio"}
    rows = [(k.replace("_", " ").capitalize(), _cell(v, kinds.get(k, "ratio"))) for k, v in comp.items()]
    return _table([f"Against {bench.name}", ""], rows, "tp-comparison")


def _settings_table(result: BacktestResult, data_name: str | None) -> str:
    rows = [("Strategy", _e(result.strategy.label()))]
    rows += [(f"param {k}", _e(str(v))) for k, v in result.strategy.params.items()]
    rows.append(("Data", _e(data_name or ", ".join(result.columns))))
    rows.append(("Bars per year", f"{result.ann_factor:,.2f}"))
    rows.append(("Risk-free rate", f"{result.risk_free:.2%}"))
    for f in dataclasses.fields(result.settings):
        rows.append((f.name, _e(str(getattr(result.settings, f.name)))))
    return _table(["Settings", ""], rows, "tp-settings")


def _var_table(result: BacktestResult, bench: plots.Benchmark) -> str:
    from framework import risk

    series = {result.strategy.label(): result.equity.pct_change().iloc[1:],
              bench.name: bench.equity.pct_change().iloc[1:]}
    rows = []
    for method, label in (("historical", "historical"), ("parametric", "normal")):
        for conf in (0.95, 0.99):
            cells = []
            for returns in series.values():
                var, es = risk.var_es(returns, conf, method=method)
                cells += [_cell(var, "pct"), _cell(es, "pct")]
            rows.append((f"{label}, {conf:.0%}", *cells))
    head = ["One-bar loss"] + [f"{n} {m}" for n in series for m in ("VaR", "ES")]
    return (_table(head, rows, "tp-var")
            + "<p class='note'>VaR and ES are positive loss fractions of equity over one bar; ES is "
            "the mean loss beyond the VaR.</p>")


def _monte_carlo(result: BacktestResult):
    from framework import risk

    steps = len(result.index) - 1
    n_paths = int(min(2000, max(100, _MC_CELLS // steps)))
    return risk.monte_carlo(result, "block", n_paths=n_paths, seed=MC_SEED, keep_paths=True)


def _mc_table(mc) -> str:
    summary = mc.summary(confidence=0.90, loss=0.0, ruin=0.5)
    labels = {"final_return": "Final return", "cagr": "CAGR", "max_drawdown": "Max drawdown",
              "min_return": "Lowest equity vs start", "prob_loss": "P(loss)",
              "prob_ruin": "P(equity halves)"}
    rows = [(labels.get(k, k), *(_cell(v, "pct") for v in vals)) for k, vals in summary.iterrows()]
    return _table(["", "estimate", "5 %", "95 %"], rows, "tp-montecarlo")


def _stress_table(result: BacktestResult) -> str:
    from framework.stress import stress_test

    table = stress_test(result.strategy, result.frames, **dataclasses.asdict(result.settings))
    rows = []
    for r in table.to_dict("records"):
        period = f"{r['start']:%Y-%m-%d} to {r['end']:%Y-%m-%d}"
        if not r["covered"]:
            rows.append((_e(r["scenario"]), r["kind"], period, "", "", "", _e(f"not run: {r['note']}"), ""))
            continue
        fired = _e(r["risk_reasons"].replace(",", ", ")) if r["risk_limit_fired"] else "none"
        rows.append((_e(r["scenario"]), r["kind"], period, _cell(r["return"], "pct", True),
                     _cell(r["max_drawdown"], "pct", True), _cell(r["worst_bar"], "pct", True), fired,
                     _cell(r["buy_and_hold_return"], "pct", True)))
    head = ["scenario", "kind", "period", "return", "max drawdown", "worst bar", "risk limits fired",
            "buy & hold return"]
    return _table(head, rows, "tp-stress")


def _trades_table(result: BacktestResult) -> str:
    trades = result.trades
    if trades.empty:
        return "<p>No trades.</p>"
    shown = trades.head(MAX_TRADES)
    rows = []
    for t in shown.to_dict("records"):
        rows.append((_e(t["instrument"]), t["side"], f"{t['entry_time']:%Y-%m-%d %H:%M}",
                     f"{t['entry_price']:,.6g}", f"{t['exit_time']:%Y-%m-%d %H:%M}",
                     f"{t['exit_price']:,.6g}", f"{t['qty']:.6g}", _cell(t["pnl"], "cash", True),
                     _cell(t["return"], "pct", True), _e(metrics._format_timedelta(t["duration"])),
                     _e(t["exit_reason"])))
    note = (f"<p class='note'>The first {MAX_TRADES} of {len(trades):,} trades.</p>"
            if len(trades) > MAX_TRADES else "")
    head = ["instrument", "side", "entry", "entry price", "exit", "exit price", "qty", "pnl",
            "return", "duration", "exit reason"]
    return note + "<div class='scroll'>" + _table(head, rows, "tp-trades") + "</div>"


# --- html helpers -----------------------------------------------------------------------------


def _e(text: str) -> str:
    return html.escape(str(text))


def _cell(value: object, kind: str, signed: bool = False) -> str:
    """A value formatted as in ``stats_table``; with ``signed``, losses red and gains green."""
    text = _e(metrics._format_value(value, kind))
    if signed and isinstance(value, (int, float, np.floating)) and value and not math.isnan(value):
        return f"<span class='{'neg' if value < 0 else 'pos'}'>{text}</span>"
    return text


def _table(head: list[str], rows: list[tuple[str, ...]], table_id: str) -> str:
    """An HTML table; the cells are HTML already (escaped by the caller)."""
    cells = "".join(f"<th>{_e(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table id='{table_id}'><thead><tr>{cells}</tr></thead><tbody>{body}</tbody></table>"


# --- command line -----------------------------------------------------------------------------


def register(subparsers) -> None:
    """Add ``tradpal report`` to the ``tradpal`` parser."""
    from framework import data_cli

    p = subparsers.add_parser("report", help="backtest a strategy and write an HTML tear sheet")
    p.add_argument("strategy", help="strategy name (see `tradpal strategies`)")
    p.add_argument("--data", required=True, help="CSV/Parquet path or bundled dataset name, e.g. BTC_USDT-1d")
    p.add_argument("--benchmark", metavar="DATA", help="buy-and-hold of this dataset to compare with "
                   "(default: buy-and-hold of --data)")
    p.add_argument("--param", action="append", metavar="NAME=VALUE", help="strategy parameter (repeatable)")
    p.add_argument("--set", action="append", metavar="SETTING=VALUE",
                   help="simulator setting, e.g. fees=0.001 sl_pct=0.05 (repeatable)")
    p.add_argument("--policy", choices=("raise", "drop", "fill"), default="raise", help=data_cli.POLICY_HELP)
    p.add_argument("--calendar", choices=("auto", "24/7", "sessions"), default="auto",
                   help="how to judge gaps in the data (default: guess from the data)")
    p.add_argument("--out", default="report.html", help="HTML file to write (default report.html)")
    p.set_defaults(func=cmd_report)


def benchmark_option(value: str | None, bt: Backtest) -> BenchmarkCurve | None:
    """``--benchmark B`` of ``tradpal backtest`` and ``tradpal report``: an instrument of
    ``--data``, a bundled dataset or a file, resolved for ``bt`` as ``Backtest(benchmark=)``
    does; errors name the option."""
    from framework import data_cli
    from framework.backtest import resolve_benchmark
    from framework.data import DataValidationError

    if value is None:
        return None
    try:
        return resolve_benchmark(value, bt.frames, bt.settings, bt.trade_from_bar,
                                 policy=bt.policy, calendar=bt.calendar)
    except DataValidationError as e:
        raise ValueError(f"--benchmark {value}: {data_cli.validation_advice(e, value)}") from None
    except (FileNotFoundError, ValueError, TypeError) as e:
        raise ValueError(f"--benchmark {value}: {e}") from None


def cmd_report(args: argparse.Namespace) -> int:
    """Run the backtest, write the report, print where it went."""
    from framework import data_cli
    from framework.backtest import Backtest
    from framework.data import DataValidationError
    from framework.settings import settings_from_pairs
    from strategies import get_strategy

    strategy = get_strategy(args.strategy).from_strings(args.param or [])
    settings = settings_from_pairs(args.set)
    out = Path(args.out)
    if not out.parent.is_dir():
        raise ValueError(f"--out {args.out}: folder {out.parent} does not exist")
    try:
        bt = Backtest(strategy, args.data, policy=args.policy, calendar=args.calendar, **settings)
    except DataValidationError as e:
        raise ValueError(data_cli.validation_advice(e, args.data)) from None
    bt.benchmark = benchmark_option(args.benchmark, bt)
    result = bt.run()
    to_html(result, out, data_name=str(args.data))
    size = out.stat().st_size / 1e6
    print(f"wrote {out} ({size:.1f} MB): {strategy!r} on {args.data}, "
          f"{len(result.trades)} trades, total return {result.stats['total_return']:.2%}")
    return 0

