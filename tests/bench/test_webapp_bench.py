"""bench/webapp.py runs: both pages render with 50 instances (its timings are bench/'s)."""

from __future__ import annotations

from bench import webapp


def test_render_times_measure_both_pages(redis_url: str) -> None:
    result = webapp.render_times(redis_url, requests=10)
    assert result["catalog_search"]["requests"] == 10
    assert result["source_page_50_instances"]["requests"] == 10
    assert result["redis"] is True
