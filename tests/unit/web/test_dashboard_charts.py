"""Inline SVG charts: well-formed XML, labels escaped, empty data said in words."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from gateway.web.dashboard.charts import bars, lines, stacked

EVIL = '<script>alert("x")</script>&'


def parse(svg: str) -> ET.Element:
    return ET.fromstring(svg)


def test_bars_are_well_formed_and_escaped() -> None:
    svg = bars("Title " + EVIL, [(EVIL, 3.0), ("b", 1.5), ("zero", 0.0)], unit="%")
    root = parse(svg)
    assert root.tag.endswith("svg")
    assert "<script" not in svg
    rects = [e for e in root.iter() if e.tag.endswith("rect")]
    assert len(rects) == 3
    widths = [float(r.attrib["width"]) for r in rects]
    assert widths[0] > widths[1] > widths[2] == 0.0
    assert "1.50%" in svg


def test_stacked_has_a_legend_and_a_segment_per_nonzero_part() -> None:
    svg = stacked("s", ("delivered", "dead"), [("meta", (3.0, 1.0)), ("tiktok", (0.0, 0.0))])
    root = parse(svg)
    rects = [e for e in root.iter() if e.tag.endswith("rect")]
    assert len(rects) == 2 + 2  # legend swatches + meta's two segments


def test_lines_draw_a_polyline_per_series() -> None:
    svg = lines("l", ["10:00", "10:01", "10:02"], [("a", [1, 2, 3]), (EVIL, [0, 0, 5])])
    root = parse(svg)
    polylines = [e for e in root.iter() if e.tag.endswith("polyline")]
    assert len(polylines) == 2
    assert all(len(p.attrib["points"].split()) == 3 for p in polylines)


def test_empty_charts_say_so() -> None:
    assert "no data yet" in bars("x", [])
    assert "no data yet" in stacked("x", ("a",), [])
    assert "no data yet" in lines("x", [], [])
