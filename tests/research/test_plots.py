import struct
import subprocess
import sys

import numpy as np
import pytest
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure
from scipy.stats import spearmanr

from memft.research import plots

FIT = {"setting": "sft", "C": 2.0, "alpha": 0.3, "beta": 0.5, "b": 0.1, "n": 9}
# Record 0 of the stress rows: positions 2, 5 (exactly 0.5) and 6 are stubborn (p ≤ 0.5).
PROBS = [0.9, 0.8, 0.2, 0.95, 0.51, 0.5, 0.1, 0.99]


def law(r, ell):
    return FIT["C"] * r ** FIT["alpha"] * ell ** -FIT["beta"] + FIT["b"]


def synthetic_rows():
    """A hand-built store: 2 methods x ranks {1,2,4} x lengths {32,64,128}, plus three stress-like rows with probs.
    sft follows the law exactly; memft-ot sits 10% above it. Records: failures at fixed, hand-chosen positions."""
    rows = []
    for m, scale in (("sft", 1.0), ("memft-ot", 1.1)):
        for r in (1, 2, 4):
            for ell in (32, 64, 128):
                rows.append({
                    "benchmark": "phonebook", "method": m, "rank": r, "length": ell, "ratio": None, "seed": 0,
                    "loss_init": 3.0, "delta_loss": scale * law(r, ell), "loss_final": 3.0 - scale * law(r, ell),
                    "exact_match": r / 4 if m == "sft" else 1.0, "token_accuracy": 0.5 + r / 8, "certified": r / 4,
                    "steps_to_certify": 100 * r if r > 1 else None,
                    "first_failure": [None, ell // 4, r], "earliest_stubborn": [3, ell // 4 - 1, None],
                    "stubborn_positions": [[3], [ell // 4 - 1], []],
                })
    for r in (1, 2, 4):
        rows.append({"benchmark": "stress", "method": "sft", "rank": r, "length": 8, "ratio": 1.0,
                     "probs": [PROBS], "first_failure": [2 if r < 4 else None], "earliest_stubborn": [2]})
    return rows


@pytest.fixture
def rows():
    return synthetic_rows()


def _texts(fig):
    return [t.get_text() for ax in fig.axes for t in ax.texts]


def test_delta_vs_rank_and_length_series_and_law_curves(rows):
    sft = [r for r in rows if r["method"] == "sft"]
    fig = plots.delta_vs_rank(sft, FIT)
    assert isinstance(fig, Figure) and len(fig.axes) == 1
    ax = fig.axes[0]
    assert ax.get_xscale() == ax.get_yscale() == "log"
    assert len(ax.lines) == 6  # 3 lengths: data + law curve each
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["ℓ = 32", "ℓ = 64", "ℓ = 128", "law fit"]
    x, y = ax.lines[0].get_data()  # ℓ = 32, one point per rank, on the law
    assert list(x) == [1, 2, 4] and np.allclose(y, [law(r, 32) for r in (1, 2, 4)])
    assert np.allclose(ax.lines[1].get_ydata(), law(ax.lines[1].get_xdata(), 32))  # the dashed curve is the law
    assert len(plots.delta_vs_rank(sft).axes[0].lines) == 3  # no fit, no curves
    ax = plots.delta_vs_length(sft, FIT).axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["r = 1", "r = 2", "r = 4", "law fit"]
    assert list(ax.lines[0].get_xdata()) == [32, 64, 128]
    assert ax.get_xlabel().startswith("value length")


def test_delta_vs_rank_averages_shared_points(rows):
    ax = plots.delta_vs_rank(rows).axes[0]  # both methods: each point is the mean of 1.0x and 1.1x the law
    assert np.allclose(ax.lines[0].get_ydata(), [1.05 * law(r, 32) for r in (1, 2, 4)])
    assert any("mean over rows" in t for t in _texts(ax.figure))


def test_log_plane_scatter_and_surface(rows):
    fig = plots.log_plane(rows, FIT)
    assert len(fig.axes) == 1 and fig.axes[0].name == "3d"
    assert len(fig.axes[0].collections) == 2  # scatter + fitted surface
    assert len(plots.log_plane(rows).axes[0].collections) == 1


def test_predicted_vs_true_r2(rows):
    sft = [r for r in rows if r["method"] == "sft"]
    fig = plots.predicted_vs_true(sft, FIT)
    ax = fig.axes[0]
    assert "R² = 1.000 (n = 9)" in ax.get_title()  # sft follows the law exactly
    off = np.array(ax.collections[0].get_offsets())
    assert np.allclose(off[:, 0], off[:, 1])
    assert "R² = 0.950 (fit)" in plots.predicted_vs_true(sft, FIT | {"r2": 0.95}).axes[0].get_title()
    # with the fit's saturation margin, rows with ΔL ≥ (1 − eps)·loss_init are drawn apart and left out of R²
    eps = 1 - law(4, 64) / 3.0 - 1e-9  # saturates exactly the rows with ΔL ≥ law(4, 64): (4, 32) and (4, 64)
    ax = plots.predicted_vs_true(sft, FIT | {"eps": eps}).axes[0]
    assert [len(c.get_offsets()) for c in ax.collections] == [7, 2]
    assert "R² = 1.000 (n = 7)" in ax.get_title()


def test_delta_loss_falls_back_to_loss_difference(rows):
    old = [dict(r, delta_loss=None) for r in rows if r["method"] == "sft"]
    y = plots.delta_vs_rank(old).axes[0].lines[0].get_ydata()
    assert np.allclose(y, [law(r, 32) for r in (1, 2, 4)])


def test_heatmap_cells(rows):
    fig = plots.heatmap(rows, "loss_final")
    assert len(fig.axes) == 2  # grid + colorbar
    texts = fig.axes[0].texts
    assert len(texts) == 9
    # cell (rank 4, ℓ 128) is the mean over the two methods
    want = 3.0 - 1.05 * law(4, 128)
    assert float(texts[2 * 3 + 2].get_text()) == pytest.approx(want, rel=5e-3)  # 3 significant digits
    acc = plots.heatmap(rows, metric="token_accuracy").axes[0]
    assert [t.get_text() for t in acc.texts[::3]] == ["62.5", "75.0", "100.0"]  # percent, per rank at ℓ=32


def test_exact_landscape_one_panel_per_method(rows):
    fig = plots.exact_landscape(rows)
    assert len(fig.axes) == 3  # memft-ot, sft, shared colorbar
    assert [ax.get_title() for ax in fig.axes[:2]] == ["memft-ot", "sft"]
    assert [t.get_text() for t in fig.axes[1].texts[::3]] == ["25", "50", "100"]


def test_probability_grid_red_bars_are_stubborn_positions(rows):
    fig = plots.probability_grid(rows)
    assert len(fig.axes) == 3  # one panel per rank
    red = to_rgba(plots.LOW)
    for ax, rank in zip(fig.axes, (1, 2, 4)):
        assert ax.get_title().startswith(f"r = {rank}")
        bars = ax.patches
        assert len(bars) == len(PROBS)
        assert [i for i, b in enumerate(bars) if b.get_facecolor() == red] == [2, 5, 6]
        styles = {ln.get_linestyle(): ln for ln in ax.lines}
        assert list(styles["--"].get_ydata()) == [0.5, 0.5]
        if rank < 4:
            assert list(styles[":"].get_xdata()) == [2, 2]
        else:
            assert ":" not in styles  # no free-run failure, no line


def test_failure_histogram_counts(rows):
    fig = plots.failure_histogram(rows)
    heights = [p.get_height() for p in fig.axes[0].patches]
    assert sum(heights) == 2 * 18 + 2  # two failing records per grid row, plus two stress rows


def test_spearman_matches_scipy_and_monotone_case(rows):
    pairs = [(s, f) for r in rows for s, f in zip(r["earliest_stubborn"], r["first_failure"]) if s is not None and f is not None]
    rho, n = plots.stubborn_failure_spearman(rows)
    assert n == len(pairs) == 18 + 2
    assert rho == pytest.approx(spearmanr(*zip(*pairs)).statistic)
    hand = [{"earliest_stubborn": [0, 3, 1, 7, None], "first_failure": [2, 10, 5, 11, 4]}]
    assert plots.stubborn_failure_spearman(hand) == (1.0, 4)
    rev = [{"earliest_stubborn": [0, 1, 2], "first_failure": [9, 5, 3]}]
    assert plots.stubborn_failure_spearman(rev) == (-1.0, 3)
    rho, n = plots.stubborn_failure_spearman([{"earliest_stubborn": [1], "first_failure": [2]}])
    assert np.isnan(rho) and n == 1


def test_stubborn_vs_failure_title(rows):
    rho, n = plots.stubborn_failure_spearman(rows)
    fig = plots.stubborn_vs_failure(rows)
    assert f"Spearman ρ = {rho:.3f}, n = {n}" in fig.axes[0].get_title()
    assert len(fig.axes[0].collections[0].get_offsets()) == n


@pytest.mark.parametrize("data", [[], [{"method": "x", "rank": None, "first_failure": [None]}]])
def test_no_data_figures_do_not_raise(data):
    for name, spec in plots.ALL_FIGURES.items():
        fig = spec(data, None)
        assert isinstance(fig, Figure), name
        assert any(t.startswith("no data") for t in _texts(fig)), name


def test_law_figures_without_fit(rows):
    assert any(t.startswith("no data") for t in _texts(plots.predicted_vs_true(rows, None)))
    assert any(t.startswith("no data") for t in _texts(plots.predicted_vs_true(rows, {"C": None})))


def test_registry_and_save(rows, tmp_path):
    assert set(plots.ALL_FIGURES) == {
        "delta_vs_rank", "delta_vs_length", "log_plane", "predicted_vs_true", "heatmap", "exact_landscape",
        "probability_grid", "failure_histogram", "stubborn_vs_failure", "training_curves"}
    assert all(s.needs and s.fit in ("no", "optional", "required") for s in plots.ALL_FIGURES.values())
    fig = plots.failure_histogram(rows)
    png, svg = plots.save(fig, tmp_path / "sub" / "hist.v1")
    assert (png.name, svg.name) == ("hist.v1.png", "hist.v1.svg")
    head = png.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    w, h = struct.unpack(">II", head[16:24])
    assert (w, h) == (round(6.4 * 120), round(4.0 * 120))  # 120 dpi
    assert svg.read_text().lstrip().startswith("<?xml")


def test_import_needs_neither_torch_nor_pyplot():
    code = "import sys, memft.research.plots, memft.research.report; print('torch' in sys.modules, 'matplotlib.pyplot' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_training_curves_draw_delta_loss_per_run():
    from memft.research.plots import training_curves

    curve = [{"step": 0, "loss": 5.0}, {"step": 1, "loss": 3.0}, {"step": 2, "loss": 2.5}]
    rows = [{"benchmark": "stress", "length": 64, "ratio": 1.0, "rank": r, "method": "sft", "seed": 0, "loss_init": 5.0,
             "stop_when_certified": False, "curve": curve} for r in (1, 2)]
    rows.append({**rows[0], "stop_when_certified": True})  # early-stopped: not a budget curve (same label, not drawn twice)
    ax = training_curves(rows).axes[0]
    assert [line.get_label() for line in ax.get_lines()] == ["stress ℓ=64 ρ=1 r=1 sft", "stress ℓ=64 ρ=1 r=2 sft"]
    assert list(ax.get_lines()[0].get_ydata()) == [0.0, 2.0, 2.5]
    assert training_curves([]).axes[0].texts  # the no-data figure says why
