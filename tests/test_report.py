"""Charts (framework.plots) and the HTML tear sheet (framework.report, ``tradpal report``).

Figures are checked against the result's own series and independent recomputations; the report
is rendered in headless Chromium (Debian's ``chromium``, installed by ``make test`` and
``.ci/run`` when missing; without it these tests fail, they never skip).
"""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest
from nbclient import NotebookClient

from framework import Backtest, plots, report, risk
from framework.cli import main
from framework.data import load_ohlcv
from framework.metrics import _format_value
from framework.stress import stress_test

ROOT = Path(__file__).parent.parent


@pytest.fixture(scope="module")
def result():
    return Backtest("sma_cross", "BTC_USDT-1d").run()


def _times(x) -> list[pd.Timestamp]:
    """Trace x values as UTC timestamps (plotly keeps a Series' times without their zone)."""
    index = pd.DatetimeIndex(x)
    return list(index.tz_localize("UTC") if index.tz is None else index.tz_convert("UTC"))


def _trace(fig, name):
    found = [t for t in fig.data if t.name == name]
    assert len(found) == 1, [t.name for t in fig.data]
    return found[0]


# --- figures ----------------------------------------------------------------------------------


def test_plot_traces_are_the_results_series(result):
    fig = result.plot()
    close = result.frames["BTC_USDT-1d"]["close"]
    np.testing.assert_array_equal(_trace(fig, "BTC_USDT-1d close").y, close.to_numpy())
    # the declared indicators, against pandas' rolling mean (windows 10 and 30 by default)
    for window in (10, 30):
        got = np.asarray(_trace(fig, f"sma(close, {window})").y, dtype=float)
        np.testing.assert_allclose(got, close.rolling(window).mean().to_numpy(), rtol=1e-9)
    equity = _trace(fig, "sma_cross")
    np.testing.assert_array_equal(equity.y, result.equity.to_numpy())
    assert _times(equity.x) == list(result.index)
    np.testing.assert_array_equal(_trace(fig, "Buy & Hold").y, result.benchmark[0].to_numpy())
    peak = np.maximum.accumulate(result.equity.to_numpy())
    np.testing.assert_allclose(_trace(fig, "drawdown").y, result.equity.to_numpy() / peak - 1, atol=1e-12)
    for side in ("buy", "sell"):
        fills = result.fills[result.fills["side"] == side]
        trace = _trace(fig, side)
        assert len(fills) > 10
        assert _times(trace.x) == list(fills["time"])
        np.testing.assert_array_equal(trace.y, fills["price"].to_numpy())
    exposure = np.asarray(_trace(fig, "exposure").y, dtype=float)
    # long-only, all-in sizing: invested exactly while a position is open, never above equity
    np.testing.assert_array_equal(exposure != 0, result.exposure)
    assert exposure.min() >= 0 and exposure.max() <= 1 + 1e-9 and exposure.max() > 0.95


def test_plot_oscillators_get_their_own_panel():
    res = Backtest("rsi_reversion", "BTC_USDT-1d").run()
    fig = res.plot()
    rsi = _trace(fig, "rsi(close, 14)")
    assert rsi.yaxis == "y2"  # the row below the price
    assert _trace(fig, "BTC_USDT-1d close").yaxis == "y"
    values = np.asarray(rsi.y, dtype=float)
    assert np.nanmin(values) >= 0 and np.nanmax(values) <= 100


def test_multi_instrument_plot_and_report_per_instrument():
    res = Backtest("sma_cross", {"BTC": "BTC_USDT-1d", "ETH": "ETH_USDT-1d"}).run()
    fig = res.plot("ETH")
    np.testing.assert_array_equal(_trace(fig, "ETH close").y, res.frames["ETH"]["close"].to_numpy())
    fills = res.fills[(res.fills["instrument"] == "ETH") & (res.fills["side"] == "buy")]
    assert 0 < len(fills) < (res.fills["side"] == "buy").sum()
    np.testing.assert_array_equal(_trace(fig, "buy").y, fills["price"].to_numpy())
    np.testing.assert_array_equal(_trace(fig, "sma_cross").y, res.equity.to_numpy())  # the portfolio
    text = res.to_html()
    assert "BTC price and fills" in text and "ETH price and fills" in text


def test_plot_rejects_unknown_instrument(result):
    with pytest.raises(ValueError, match=r"instrument='ETH'.*BTC_USDT-1d"):
        result.plot("ETH")


def test_benchmark_of_another_dataset_is_its_buy_and_hold(result):
    bench = plots.benchmark_for(result, "ETH_USDT-1d")
    eth = load_ohlcv("ETH_USDT-1d").loc[result.index]
    s = result.settings
    entry = eth["open"].iloc[1] * (1 + s.slippage)
    qty = s.init_cash / (entry * (1 + s.fees))
    expected = s.init_cash - qty * entry * (1 + s.fees) + qty * eth["close"].iloc[-1]
    assert bench.equity.iloc[-1] == pytest.approx(expected, rel=1e-12)
    assert bench.equity.iloc[0] == s.init_cash
    assert bench.stats["total_return"] == pytest.approx(expected / s.init_cash - 1, rel=1e-12)
    assert bench.name == "Buy & Hold ETH_USDT-1d"


def test_benchmark_without_common_bars_is_refused(result, tmp_path):
    old = load_ohlcv("ETH_USDT-1d").head(50)
    old.index = old.index - pd.Timedelta(days=20_000)
    path = tmp_path / "OLD-1d.csv"
    old.rename_axis("timestamp").to_csv(path)
    with pytest.raises(ValueError, match="shares 0 bars with the backtest"):
        plots.benchmark_for(result, path)


def test_monthly_returns_by_hand():
    index = pd.date_range("2023-01-01", "2023-03-31", freq="D", tz="UTC")
    equity = pd.Series(100.0 + np.arange(len(index)), index=index)  # 100 on Jan 1, +1 a day
    table = plots.monthly_returns(equity)
    assert list(table.index) == [2023] and list(table.columns) == list(range(1, 13))
    jan, feb, mar = 130.0, 158.0, 189.0  # equity on Jan 31, Feb 28, Mar 31
    np.testing.assert_allclose(table.loc[2023, [1, 2, 3]], [jan / 100 - 1, feb / jan - 1, mar / feb - 1])
    assert table.loc[2023, 4:].isna().all()
    fig = plots.monthly_heatmap(equity)
    np.testing.assert_array_equal(fig.data[0].z, table.to_numpy())


def test_sweep_heatmap_pivots_the_metric():
    table = pd.DataFrame({"fast": [5, 5, 10, 10], "slow": [20, 40, 20, 40], "sharpe": [0.1, 0.2, 0.3, 0.4]})
    fig = plots.heatmap(table, "fast", "slow", "sharpe")
    heat = fig.data[0]
    assert list(heat.x) == ["5", "10"] and list(heat.y) == ["20", "40"]
    np.testing.assert_array_equal(heat.z, [[0.1, 0.3], [0.2, 0.4]])  # rows slow, columns fast
    with pytest.raises(ValueError, match="metric='calmar' is not a column"):
        plots.heatmap(table, "fast", "slow", "calmar")
    with pytest.raises(ValueError, match=r"several rows per \(fast, slow\)"):
        plots.heatmap(pd.concat([table.assign(sl=0.01), table.assign(sl=0.02)]), "fast", "slow")


def test_rolling_sharpe_by_hand():
    rng = np.random.default_rng(3)
    returns = pd.Series(rng.normal(0.001, 0.02, 50), index=pd.date_range("2024-01-01", periods=50, tz="UTC"))
    got = plots.rolling_sharpe(returns, 10, 365.0)
    last = returns.to_numpy()[-10:]
    assert got.iloc[-1] == pytest.approx(last.mean() / last.std(ddof=1) * np.sqrt(365))
    assert got.iloc[:9].isna().all() and got.iloc[9:].notna().all()


def test_rolling_risk_and_fan_hold_the_risk_numbers(result):
    fig = plots.rolling_risk(result, window=60, confidence=0.95)
    expected = risk.rolling_var_es(result, 60, 0.95)
    np.testing.assert_array_equal(_trace(fig, "VaR").y, expected["var"].to_numpy())
    np.testing.assert_array_equal(_trace(fig, "ES").y, expected["es"].to_numpy())
    mc = risk.monte_carlo(result, "block", n_paths=200, seed=5, keep_paths=True)
    fan = plots.monte_carlo_fan(mc, result)
    bands = mc.equity_bands(0.9)
    np.testing.assert_array_equal(_trace(fan, "median path").y, bands["median"].to_numpy())
    np.testing.assert_array_equal(_trace(fan, "90% band").y, bands["lower"].to_numpy())
    actual = _trace(fan, "actual").y
    assert len(actual) == mc.n_steps == len(result.index) - 1
    assert actual[-1] == pytest.approx(result.equity.iloc[-1] / result.equity.iloc[0])


# --- the HTML report ----------------------------------------------------------------------------


def test_html_holds_the_statistics_and_trades(result, tmp_path):
    path = tmp_path / "r.html"
    text = result.to_html(path)
    assert path.read_text(encoding="utf-8") == text
    for stats in (result.stats, result.benchmark_stats):
        for key in ("total_return", "cagr", "max_drawdown"):
            assert _format_value(stats[key], "pct") in text
        assert _format_value(stats["sharpe"], "ratio") in text
    trades = re.search(r"<table id='tp-trades'>.*?</table>", text, re.S).group(0)
    assert trades.count("<tr>") == len(result.trades) + 1  # + the header
    var, es = risk.var_es(result, 0.99, method="historical")
    assert _format_value(var, "pct") in text and _format_value(es, "pct") in text
    assert "<table id='tp-stress'>" in text and "covid_crash_2020" in text
    assert "<table id='tp-stress'>" not in result.to_html(stress=False)
    # plotly.js once, inline: no script from the network
    from plotly.offline import get_plotlyjs

    assert text.count(get_plotlyjs()) == 1
    assert not re.search(r"<script[^>]+src=", text)


def _chromium() -> str:
    exe = shutil.which("chromium")
    if exe is None:  # not a skip: the rendering is what the test is about
        pytest.fail("Debian's chromium is not installed; `make test` and `.ci/run` install it "
                    "(apt-get install chromium)")
    return exe


def _render(page: Path, tmp_path: Path, screenshot: Path | None = None) -> str:
    """The DOM after the page's scripts ran (and a screenshot), from headless Chromium."""
    flags = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
             "--no-first-run", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", f"--user-data-dir={tmp_path / 'chromium-profile'}",
             "--virtual-time-budget=10000", "--window-size=1400,3000"]
    if screenshot is not None:
        subprocess.run([*flags, f"--screenshot={screenshot}", page.as_uri()], check=True,
                       capture_output=True, timeout=120)
    out = subprocess.run([*flags, "--dump-dom", page.as_uri()], check=True, capture_output=True,
                         text=True, timeout=120)
    return out.stdout


def _png_pixels(path: Path) -> tuple[int, int, int]:
    """Width, height and the raw (filtered) image bytes' length of a PNG, parsed by hand."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, size = 8, b"", None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            size = struct.unpack(">II", body[:8])
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    return (*size, len(zlib.decompress(idat)))


def _charts(dom: str) -> dict[str, str]:
    """Each chart div of the rendered report: its id -> its markup."""
    parts = re.split(r'<div id="(tp-chart-\d+)"', dom)
    return dict(zip(parts[1::2], parts[2::2]))


def test_cli_report_renders_in_chromium(tmp_path, capsys):
    out = tmp_path / "report.html"
    code = main(["report", "sma_cross", "--data", "BTC_USDT-1d", "--benchmark", "ETH_USDT-1d",
                 "--out", str(out)])
    assert code == 0
    assert f"wrote {out}" in capsys.readouterr().out
    text = out.read_text(encoding="utf-8")
    assert "Buy &amp; Hold ETH_USDT-1d" in text
    shot = tmp_path / "report.png"
    dom = _render(out, tmp_path, shot)
    errors = re.search(r'<div id="tp-errors"[^>]*>(.*?)</div>', dom, re.S)
    assert errors is not None and errors.group(1).strip() == "", errors
    charts = _charts(dom)
    assert len(charts) == text.count("<div id=\"tp-chart-") == 5
    for div_id, markup in charts.items():
        assert 'class="main-svg"' in markup, div_id
        # scatter lines drawn with points, or heatmap cells painted as an image
        drawn = re.search(r'class="js-line"[^>]* d="M[\d.]+,[\d.]+L', markup) or '<g class="hm"' in markup
        assert drawn, f"{div_id} has no drawn data"
    # the stress table: one row per scenario of stress_test, its figures as the table shows them
    table = re.search(r"<table id=.tp-stress.>.*?</table>", dom, re.S).group(0)
    expected = stress_test("sma_cross", "BTC_USDT-1d")
    assert table.count("<tr>") == len(expected) + 1
    for row in expected.itertuples():
        assert f"<td>{row.scenario}</td>" in table.replace("&gt;", ">")
        if row.covered:
            assert _format_value(row.max_drawdown, "pct") in table
            assert _format_value(row.buy_and_hold_return, "pct") in table
    assert "not run: needs several instruments" in table  # correlation -> 1 with one instrument
    width, height, raw = _png_pixels(shot)
    assert (width, height) == (1400, 3000)
    assert raw == height * (1 + width * 3) or raw == height * (1 + width * 4)
    # a blank page compresses to a few kB; text, tables and charts do not
    assert shot.stat().st_size > 100_000


def test_script_errors_show_in_the_page(tmp_path):
    """The error hook the render test relies on: a failing script is recorded in the page."""
    page = report._Page()
    page.add("<script>tradpal_no_such_function();</script>")
    path = tmp_path / "broken.html"
    path.write_text(report._document("broken", page), encoding="utf-8")
    dom = _render(path, tmp_path)
    errors = re.search(r'<div id="tp-errors"[^>]*>(.*?)</div>', dom, re.S).group(1)
    assert "tradpal_no_such_function is not defined" in errors


def test_cli_report_bad_benchmark_names_the_option(tmp_path, capsys):
    code = main(["report", "sma_cross", "--data", "BTC_USDT-1d", "--benchmark", "NOPE-1d",
                 "--out", str(tmp_path / "r.html")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "--benchmark NOPE-1d" in err and "BTC_USDT-1d" in err
    assert not (tmp_path / "r.html").exists()


def test_cli_report_missing_out_folder(tmp_path, capsys):
    code = main(["report", "sma_cross", "--data", "BTC_USDT-1d", "--out", str(tmp_path / "no" / "r.html")])
    assert code == 2
    assert "--out" in capsys.readouterr().err


def test_plot_survives_nbconvert(tmp_path):
    """A notebook showing ``result.plot()``, executed and exported with nbconvert, still
    draws the chart in a browser (the figure is in an HTML output, plotly.js embedded)."""
    from nbconvert import HTMLExporter

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        "from framework import Backtest\nBacktest('sma_cross', 'BTC_USDT-1d').run().plot()")])
    NotebookClient(nb, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(ROOT)}}).execute()
    outputs = nb.cells[0].outputs
    assert not [o for o in outputs if o.output_type == "error"], outputs
    body, _ = HTMLExporter().from_notebook_node(nb)
    assert "sma(close, 10)" in body
    page = tmp_path / "nb.html"
    page.write_text(body, encoding="utf-8")
    dom = _render(page, tmp_path)
    assert 'class="main-svg"' in dom and re.search(r'class="js-line"[^>]* d="M[\d.]+,[\d.]+L', dom)


def test_report_module_exposes_to_html():
    assert report.to_html.__doc__ and plots.plot.__doc__
