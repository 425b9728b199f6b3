"""The benchmarks' charts are drawn from the results files committed beside
them: drawn again here, each says what the committed one says."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

from bench.charts import write_charts

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
CHARTS = ROOT / "docs" / "charts"
SVG = "{http://www.w3.org/2000/svg}"


def _texts(path: Path) -> list[str]:
    """The words and figures a chart shows (its titles, labels, legends, ticks)."""
    root = ET.parse(path).getroot()
    assert root.tag == f"{SVG}svg", path
    return [t.text.strip() for t in root.iter(f"{SVG}text") if t.text and t.text.strip()]


def test_the_committed_charts_are_drawn_from_the_committed_results(tmp_path: Path) -> None:
    results = json.loads((RESULTS / "suite.json").read_text())
    model = json.loads((RESULTS / "fleet-model.json").read_text())
    written = write_charts(results, tmp_path, model, "suite.json and fleet-model.json")
    assert sorted(p.name for p in written) == sorted(p.name for p in CHARTS.glob("*.svg"))
    for path in written:
        assert _texts(path) == _texts(CHARTS / path.name), path.name
    headline = _texts(tmp_path / "s3-bytes-per-blob.svg")
    assert "S3 reads during a cold storm: flat for registry-local" in headline
    assert {"registry-local", "registry:2 on S3", "registry:2 proxy"} <= set(headline)


def test_a_results_file_without_a_section_draws_no_chart_of_it(tmp_path: Path) -> None:
    results = json.loads((RESULTS / "suite.json").read_text())
    only_lazy = {"lazy": results["lazy"], "cold": {}}
    assert [p.name for p in write_charts(only_lazy, tmp_path)] == ["lazy.svg"]
