"""Tests of the local report: summary values against hand-computed ones, the CLI, the HTML page."""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import matplotlib.image
import numpy as np
import pandas as pd
import pytest

from convergence_monitor.__main__ import main
from convergence_monitor.report import (
    build_report,
    null_comparison,
    pair_curves,
    plot_score_vs_step,
    shift_magnitudes,
    summarize,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")

# Two-sided 95% Student t quantiles, from printed t tables.
T_975 = {1: 12.706204736174698, 2: 4.302652729911275}

STEPS_PER_EPOCH = 4
STEPS = (0, 1, 2, 4, 6, 8)  # epochs 0, 0.25, 0.5, 1.0, 1.5, 2.0
# Fraction of the final score reached at each step; the mean over pairs is base * GROWTH.
GROWTH = (0.0, 0.5, 0.8, 0.85, 0.95, 1.0)
LAYERS = {"conv1": 0, "layer1.0.conv2": 1, "pre_logits": 2}
BASE = {
    "procrustes": (0.9, 0.8, 0.7),
    "soft_matching": (0.6, 0.5, 0.4),
    "linear_cka": (0.95, 0.9, 0.85),
}
# The OOD probe scales the final score per depth; the last layer ends below zero.
OOD_PROBE = "gaussian_noise-3"
OOD_SCALE = (0.9, 0.6, -0.1)
PAIRS = (("0", "1"), ("0", "2"), ("1", "2"))
PAIR_OFFSETS = (-0.01, 0.0, 0.01)  # sum to zero, so the mean over pairs is exact
FINAL_STEP = STEPS[-1]
NAN_MIDDLE = ("conv1", "soft_matching", 2, PAIRS[0])  # NaN at step 2: mean over the other two pairs
NAN_FINAL = ("layer1.0.conv2", "procrustes", FINAL_STEP, PAIRS[2])  # NaN at the final step
ROTATED_FACTOR = {"procrustes": 1.0, "soft_matching": 0.3}
ROTATED_P = {"procrustes": (0.5, 0.6, 0.7), "soft_matching": (0.001, 0.002, 0.004)}


def make_alignment_table() -> pd.DataFrame:
    """Build the synthetic table: known means per step, two NaN scores, nulls at the final step."""
    rows = []
    for probe, scale in (("id", (1.0, 1.0, 1.0)), (OOD_PROBE, OOD_SCALE)):
        for layer, depth in LAYERS.items():
            for metric, bases in BASE.items():
                final = bases[depth] * scale[depth]
                for step, growth in zip(STEPS, GROWTH):
                    for pair, offset in zip(PAIRS, PAIR_OFFSETS):
                        score = final * growth + offset
                        if (layer, metric, step, pair) in (NAN_MIDDLE, NAN_FINAL) and probe == "id":
                            score = math.nan
                        rows.append((step, step / STEPS_PER_EPOCH, probe, layer, depth, metric, *pair, score))
                if metric not in ROTATED_FACTOR:
                    continue
                for pair, offset, rotated_p in zip(PAIRS, PAIR_OFFSETS, ROTATED_P[metric]):
                    native = final + offset
                    for suffix, score in (
                        ("@rotated", ROTATED_FACTOR[metric] * native),
                        ("@rotated_p", rotated_p),
                        ("@shuffled", 0.01),
                        ("@shuffled_p", 0.001),
                    ):
                        rows.append(
                            (FINAL_STEP, FINAL_STEP / STEPS_PER_EPOCH, probe, layer, depth, metric + suffix, *pair, score)
                        )
    columns = ["step", "epoch", "probe", "layer", "depth", "metric", "seed_a", "seed_b", "score"]
    return pd.DataFrame(rows, columns=columns)


def make_probe_stats() -> pd.DataFrame:
    """Per-seed accuracies: the OOD probe loses 0.18, 0.12 and 0.09, a mean drop of 0.13."""
    rows = []
    for step in (0, FINAL_STEP):
        for seed, id_accuracy, ood_accuracy in (("0", 0.98, 0.80), ("1", 0.97, 0.85), ("2", 0.99, 0.90)):
            rows.append((step, step / STEPS_PER_EPOCH, "id", seed, id_accuracy, 0.0))
            rows.append((step, step / STEPS_PER_EPOCH, OOD_PROBE, seed, ood_accuracy, 12.0))
    return pd.DataFrame(rows, columns=["step", "epoch", "probe", "seed", "accuracy", "frechet_distance"])


def write_run_dir(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    make_alignment_table().to_csv(directory / "alignment.csv", index=False)
    make_probe_stats().to_csv(directory / "probe_stats.csv", index=False)
    return directory


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    run_dir = write_run_dir(tmp_path_factory.mktemp("run"))
    return build_report(run_dir, log_step=True, progress=False)


@pytest.fixture(scope="module")
def summary() -> pd.DataFrame:
    return summarize(make_alignment_table())


def summary_row(summary: pd.DataFrame, layer: str, metric: str, probe: str = "id") -> pd.Series:
    selected = summary.loc[(summary["probe"] == probe) & (summary["layer"] == layer) & (summary["metric"] == metric)]
    assert len(selected) == 1, f"expected one summary row for {probe}/{layer}/{metric}, found {len(selected)}"
    return selected.iloc[0]


class ImageAndLinkParser(HTMLParser):
    def __init__(self):
        super().__init__()
        self.references: list[str] = []

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        if tag == "img":
            self.references.append(attributes["src"])
        elif tag in ("a", "link", "script") and (attributes.get("href") or attributes.get("src")):
            self.references.append(attributes.get("href") or attributes.get("src"))


def test_summary_final_score_and_ci(summary):
    row = summary_row(summary, "conv1", "procrustes")
    scores = np.array([0.89, 0.90, 0.91])
    half_width = T_975[2] * 0.01 / math.sqrt(3)

    assert row["final_step"] == FINAL_STEP
    assert row["final_score"] == pytest.approx(0.9, abs=1e-12)
    assert row["final_std"] == pytest.approx(scores.std(ddof=1), abs=1e-12)
    assert row["ci_low"] == pytest.approx(0.9 - half_width, abs=1e-9)
    assert row["ci_high"] == pytest.approx(0.9 + half_width, abs=1e-9)
    assert row["n_pairs"] == 3


def test_summary_progress_ratios(summary):
    row = summary_row(summary, "pre_logits", "linear_cka")

    assert row["epoch1_step"] == 4
    assert row["epoch1_score"] == pytest.approx(0.85 * 0.85, abs=1e-12)
    assert row["fraction_at_epoch1"] == pytest.approx(0.85, abs=1e-12)
    # GROWTH reaches 0.9 first at step 6 (0.95); step 4 has 0.85.
    assert row["step_reach_90"] == 6
    assert row["note"] == ""


def test_summary_nan_at_final_step(summary):
    row = summary_row(summary, "layer1.0.conv2", "procrustes")
    final = (0.8 - 0.01 + 0.8 + 0.0) / 2
    std = np.std([0.79, 0.80], ddof=1)

    assert row["n_pairs"] == 2
    assert row["n_missing_final"] == 1
    assert row["n_missing"] == 1
    assert row["final_score"] == pytest.approx(final, abs=1e-12)
    assert row["final_std"] == pytest.approx(std, abs=1e-12)
    assert row["ci_high"] - row["final_score"] == pytest.approx(T_975[1] * std / math.sqrt(2), abs=1e-9)
    assert row["fraction_at_epoch1"] == pytest.approx(0.8 * 0.85 / final, abs=1e-12)


def test_summary_nan_mid_run_left_out():
    curves = pair_curves(make_alignment_table())
    layer, metric, step, _ = NAN_MIDDLE
    point = curves.loc[
        (curves["probe"] == "id") & (curves["layer"] == layer) & (curves["metric"] == metric) & (curves["step"] == step)
    ].iloc[0]

    # Pairs (0, 2) and (1, 2) remain, with offsets 0.0 and +0.01.
    assert point["mean"] == pytest.approx(0.6 * 0.8 + 0.005, abs=1e-12)
    assert point["n_pairs"] == 2
    assert point["n_missing"] == 1


def test_summary_negative_final_gives_nan_ratios(summary):
    row = summary_row(summary, "pre_logits", "procrustes", probe=OOD_PROBE)

    assert row["final_score"] == pytest.approx(-0.07, abs=1e-12)
    assert math.isnan(row["fraction_at_epoch1"])
    assert pd.isna(row["step_reach_90"])
    assert "<= 0" in row["note"]


def test_summary_all_pairs_nan_at_final():
    table = make_alignment_table()
    final_rows = (table["layer"] == "conv1") & (table["metric"] == "linear_cka") & (table["step"] == FINAL_STEP)
    table.loc[final_rows, "score"] = math.nan
    row = summary_row(summarize(table), "conv1", "linear_cka")

    assert math.isnan(row["final_score"])
    assert math.isnan(row["ci_low"])
    assert row["n_pairs"] == 0
    assert math.isnan(row["fraction_at_epoch1"])
    assert pd.isna(row["step_reach_90"])
    assert "missing" in row["note"]


def test_summary_distance_metric_has_no_ratios():
    table = make_alignment_table()
    table = table.loc[table["metric"] == "procrustes"].assign(metric="procrustes_distance")
    row = summary_row(summarize(table), "conv1", "procrustes_distance")

    assert row["final_score"] == pytest.approx(0.9, abs=1e-12)
    assert math.isnan(row["fraction_at_epoch1"])
    assert "distance" in row["note"]


def test_summary_run_shorter_than_one_epoch():
    table = make_alignment_table()
    row = summary_row(summarize(table.loc[table["step"] <= 2]), "conv1", "procrustes")

    assert row["final_step"] == 2
    assert row["final_score"] == pytest.approx(0.9 * 0.8, abs=1e-12)
    assert math.isnan(row["fraction_at_epoch1"])
    assert row["step_reach_90"] == 2
    assert "before the end of epoch 1" in row["note"]


def test_summary_min_final_score_threshold(summary):
    strict = summarize(make_alignment_table(), min_final_score=0.45)

    assert summary_row(summary, "pre_logits", "soft_matching")["fraction_at_epoch1"] == pytest.approx(0.85)
    assert math.isnan(summary_row(strict, "pre_logits", "soft_matching")["fraction_at_epoch1"])
    assert summary_row(strict, "conv1", "soft_matching")["fraction_at_epoch1"] == pytest.approx(0.85)


def test_summary_null_columns(summary):
    row = summary_row(summary, "conv1", "soft_matching")

    assert row["null_step"] == FINAL_STEP
    assert row["rotated_mean"] == pytest.approx(0.3 * 0.6, abs=1e-12)
    assert row["rotated_p_max"] == pytest.approx(0.004)
    assert row["shuffled_mean"] == pytest.approx(0.01)
    assert row["shuffled_p_max"] == pytest.approx(0.001)
    assert math.isnan(summary_row(summary, "conv1", "linear_cka")["rotated_mean"])


def test_null_comparison_native_beside_null():
    comparison = null_comparison(make_alignment_table())
    row = comparison.loc[
        (comparison["probe"] == "id") & (comparison["layer"] == "conv1") & (comparison["metric"] == "procrustes")
    ].iloc[0]

    assert row["native_mean"] == pytest.approx(0.9, abs=1e-12)
    assert row["rotated_mean"] == pytest.approx(0.9, abs=1e-12)
    assert row["rotated_p_max"] == pytest.approx(0.7)


def test_shift_magnitude_mean_accuracy_drop():
    shift = shift_magnitudes(make_probe_stats()).set_index("probe")

    assert shift.loc[OOD_PROBE, "accuracy_drop"] == pytest.approx(0.13, abs=1e-12)
    assert shift.loc["id", "accuracy_drop"] == pytest.approx(0.0, abs=1e-12)
    assert shift.loc[OOD_PROBE, "frechet_distance"] == pytest.approx(12.0)


def test_score_vs_step_lines_match_means():
    curves = pair_curves(make_alignment_table())
    figure = plot_score_vs_step(curves, steps_per_epoch=STEPS_PER_EPOCH)
    titles = [ax.get_title() for ax in figure.axes]
    ax = figure.axes[titles.index("linear_cka")]
    line = next(line for line in ax.lines if line.get_label() == "pre_logits")

    np.testing.assert_allclose(line.get_xdata(), STEPS)
    np.testing.assert_allclose(line.get_ydata(), [0.85 * growth for growth in GROWTH], atol=1e-12)


def test_report_writes_every_file(report):
    names = {path.name for path in report.out_dir.iterdir()}
    expected_figures = {
        "score_vs_step.png",
        "heatmap_procrustes.png",
        "heatmap_soft_matching.png",
        "heatmap_linear_cka.png",
        "final_vs_depth.png",
        "nulls.png",
    }

    assert expected_figures | {"summary.csv", "index.html"} <= names
    for name in expected_figures:
        assert (report.out_dir / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name


def test_report_summary_csv_keeps_nan(report):
    written = pd.read_csv(report.summary)
    row = written.loc[(written["probe"] == OOD_PROBE) & (written["layer"] == "pre_logits") & (written["metric"] == "procrustes")]

    assert row["final_score"].iloc[0] == pytest.approx(-0.07, abs=1e-12)
    assert math.isnan(row["fraction_at_epoch1"].iloc[0])
    assert len(written) == 2 * len(LAYERS) * len(BASE)


def test_index_html_references_existing_files(report):
    page = report.index.read_text(encoding="utf-8")
    parser = ImageAndLinkParser()
    parser.feed(page)
    files = [reference for reference in parser.references if not reference.startswith("#")]

    assert len([name for name in files if name.endswith(".png")]) == 6
    for reference in files:
        assert not re.match(r"^[a-z]+:|^//", reference), f"non-relative reference {reference}"
        assert (report.out_dir / reference).is_file(), f"index.html references missing {reference}"
    assert "http://" not in page and "https://" not in page
    assert "n/a" in page


def test_cli_in_process(tmp_path, capsys):
    run_dir = write_run_dir(tmp_path / "run")
    out_dir = tmp_path / "out"

    status = main(["report", str(run_dir), "--out", str(out_dir), "--metric-for-matrix", "procrustes", "--no-progress"])

    assert status == 0
    assert (out_dir / "index.html").is_file()
    assert (out_dir / "heatmap_procrustes.png").is_file()
    assert not (out_dir / "heatmap_linear_cka.png").exists()
    assert capsys.readouterr().out.strip() == str(out_dir / "index.html")


def test_cli_rejects_unknown_matrix_metric(tmp_path, caplog):
    run_dir = write_run_dir(tmp_path / "run")

    status = main(["report", str(run_dir), "--metric-for-matrix", "cka", "--no-progress"])

    assert status == 1
    assert "choose from" in caplog.text


def test_cli_missing_alignment_file(tmp_path, caplog):
    status = main(["report", str(tmp_path), "--no-progress"])

    assert status == 1
    assert "alignment table not found" in caplog.text


def test_cli_subprocess_default_out(tmp_path):
    run_dir = write_run_dir(tmp_path / "run")
    environment = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "MPLBACKEND": "Agg"}

    completed = subprocess.run(
        [sys.executable, "-m", "convergence_monitor", "report", str(run_dir)],
        capture_output=True,
        text=True,
        env=environment,
        cwd=tmp_path,
        timeout=120,
    )

    assert completed.returncode == 0, completed.stderr
    assert (run_dir / "report" / "index.html").is_file()
    assert (run_dir / "report" / "summary.csv").is_file()
    assert (run_dir / "report" / "score_vs_step.png").is_file()


# Injected into a copy of index.html: records on <body> how many images loaded and which did not.
IMAGE_CHECK_SCRIPT = """<script>
window.addEventListener("load", () => {
  const images = Array.from(document.images);
  const broken = images.filter((image) => !(image.complete && image.naturalWidth > 0));
  document.body.setAttribute("data-images", String(images.length));
  document.body.setAttribute("data-broken", broken.map((image) => image.getAttribute("src")).join(","));
});
</script>"""


def run_chromium(profile: Path, *arguments: str) -> subprocess.CompletedProcess:
    command = [
        str(CHROMIUM),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--enable-logging=stderr",
        "--v=0",
        *arguments,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


@pytest.mark.slow
@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium (apt-get install chromium)")
def test_index_html_renders_in_chromium(report, tmp_path):
    screenshot = tmp_path / "page.png"

    completed = run_chromium(
        tmp_path / "profile", f"--screenshot={screenshot}", "--window-size=1200,2000", report.index.resolve().as_uri()
    )

    assert completed.returncode == 0, completed.stderr[-2000:]
    # Chromium logs every console message and uncaught exception as an INFO:CONSOLE line.
    console_lines = [line for line in completed.stderr.splitlines() if "CONSOLE" in line]
    assert console_lines == [], "\n".join(console_lines)
    assert screenshot.is_file()
    pixels = matplotlib.image.imread(screenshot)
    assert pixels.shape[:2] == (2000, 1200)
    assert pixels[..., :3].std() > 0.05, "screenshot is almost uniform: the page did not render"


@pytest.mark.slow
@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium (apt-get install chromium)")
def test_index_html_images_load_in_chromium(report, tmp_path):
    # A failed <img> load under file:// logs nothing, so a copy of the page reports it in the DOM.
    copy = tmp_path / "report"
    shutil.copytree(report.out_dir, copy)
    checked_page = copy / "checked.html"
    checked_page.write_text(report.index.read_text(encoding="utf-8").replace("</body>", IMAGE_CHECK_SCRIPT + "</body>"))

    completed = run_chromium(tmp_path / "profile", "--dump-dom", "--virtual-time-budget=10000", checked_page.as_uri())

    assert completed.returncode == 0, completed.stderr[-2000:]
    assert 'data-images="6"' in completed.stdout
    assert 'data-broken=""' in completed.stdout


def test_report_drops_partial_last_line(tmp_path, caplog):
    from convergence_monitor.report.table import load_alignment

    header = "step,epoch,probe,layer,depth,metric,seed_a,seed_b,score\n"
    rows = "0,0.0,id,conv1,0,procrustes,0,1,0.5\n1,0.5,id,conv1,0,procrustes,0,1,0.75\n"
    path = tmp_path / "alignment.csv"
    path.write_text(header + rows + "2,1.0,id,conv1,0,procrustes,0,1,0.4")
    with caplog.at_level("WARNING"):
        table = load_alignment(path)
    assert sorted(table["step"].tolist()) == [0, 1]
    assert "incomplete last line" in caplog.text
