"""A worker's recent answers: the window a cost per 1,000 requests is computed over."""

from __future__ import annotations

from servion.serving.metrics import RecentAnswers, RequestCounts


def test_a_young_worker_reports_its_whole_life() -> None:
    recent = RecentAnswers(60.0, now=100.0)
    assert recent.observe(100.0, 0) == {"requests": 0, "seconds": 0.0}
    assert recent.observe(110.0, 50) == {"requests": 50, "seconds": 10.0}


def test_an_old_worker_reports_the_last_window_only() -> None:
    recent = RecentAnswers(10.0, now=0.0)
    # 100 requests a second for 30 s, then 10 a second for 20 s.
    for second in range(1, 31):
        recent.observe(float(second), 100 * second)
    for second in range(31, 51):
        window = recent.observe(float(second), 3000 + 10 * (second - 30))
    assert window == {"requests": 100, "seconds": 10.0}


def test_samples_are_kept_at_most_once_a_second_and_only_for_the_window() -> None:
    recent = RecentAnswers(5.0, now=0.0)
    for tick in range(1, 1001):  # scraped every 10 ms for 10 s
        window = recent.observe(tick / 100, tick)
    assert len(recent.samples) <= 7
    # The window's start is the last sample at or before 5 s ago: 5 to 6 s long.
    assert 5.0 <= window["seconds"] < 6.0
    assert window["requests"] == round(window["seconds"] * 100)


def test_every_status_counts_as_answered() -> None:
    counts = RequestCounts()
    for status in (200, 200, 404, 503):
        counts.start("rest", "m")(status)
    counts.start("grpc", "m")(200)
    assert counts.answered == 5
    counts.start("rest", "m")  # in flight: not answered yet
    assert counts.answered == 5
