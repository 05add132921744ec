"""Tests of retailgan.evaluation.report (markdown table, atomic PNG plot)."""

from __future__ import annotations

from pathlib import Path

import pytest

from retailgan.evaluation import plot_results, results_table_markdown

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

RESULTS = [
    {
        "model": "popularity",
        "params": {},
        "metrics": {"ndcg@20": 0.123456, "recall@20": 0.2},
        "ci": {"ndcg@20": [0.12, 0.127]},
        "timings": {"fit_s": 0.5, "eval_s": 1.234},
    },
    {
        "model": "ease|l2=500",
        "params": {"l2": 500},
        "metrics": {"ndcg@20": 0.3, "recall@20": 0.41},
        "timings": {"fit_s": 12.0, "eval_s": 2.0},
    },
]


def test_markdown_table_header_and_rows() -> None:
    md = results_table_markdown(RESULTS, ["ndcg@20", "recall@20", "map@20"])
    lines = md.strip().split("\n")
    assert lines[0] == "| model | ndcg@20 | recall@20 | map@20 | fit_s | eval_s |"
    assert lines[1] == "|:---|---:|---:|---:|---:|---:|"
    assert lines[2] == "| popularity | 0.1235 [0.1200, 0.1270] | 0.2000 | n/a | 0.50 | 1.23 |"
    assert lines[3] == "| ease\\|l2=500 | 0.3000 | 0.4100 | n/a | 12.00 | 2.00 |"
    assert len(lines) == 4


def test_markdown_table_missing_timings() -> None:
    md = results_table_markdown([{"model": "m", "metrics": {"x": 1}}], ["x"])
    assert md.splitlines()[2] == "| m | 1.0000 | n/a | n/a |"


def test_plot_results_writes_valid_png_atomically(tmp_path: Path) -> None:
    out = tmp_path / "sub" / "results.png"
    written = plot_results(RESULTS, ["ndcg@20", "recall@20"], out, title="t")
    assert written == out
    data = out.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert len(data) > 1000
    assert [p.name for p in out.parent.iterdir()] == ["results.png"]  # no temp left

    # overwriting keeps a valid file
    plot_results(RESULTS[:1], ["ndcg@20"], out)
    assert out.read_bytes()[:8] == PNG_MAGIC


def test_plot_results_failure_leaves_previous_file_intact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "results.png"
    plot_results(RESULTS, ["ndcg@20"], out)
    before = out.read_bytes()

    from matplotlib.figure import Figure

    def broken_savefig(self: Figure, fh, **kwargs) -> None:  # type: ignore[no-untyped-def]
        fh.write(b"partial")
        raise RuntimeError("disk full")

    monkeypatch.setattr(Figure, "savefig", broken_savefig)
    with pytest.raises(RuntimeError, match="disk full"):
        plot_results(RESULTS, ["ndcg@20"], out)
    assert out.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["results.png"]


def test_plot_results_requires_metrics(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="metrics"):
        plot_results(RESULTS, [], tmp_path / "x.png")
