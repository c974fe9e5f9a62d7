"""Progress on a log: a few summary lines instead of one bar update per second."""

import logging

import pytest

from fusionrec.progress import LogProgress, progress

pytestmark = pytest.mark.unit


def test_a_log_gets_a_line_per_quarter_and_one_at_the_end(caplog):
    caplog.set_level(logging.INFO, logger="fusionrec.progress")
    assert sum(progress(range(1000), desc="embed text", unit="item")) == sum(range(1000))  # stderr is no TTY here
    lines = [r.getMessage() for r in caplog.records]
    assert [line.split(", ")[0] for line in lines] == [
        "embed text: 25%",
        "embed text: 50%",
        "embed text: 75%",
        "embed text: done",
    ]
    assert "1,000/1,000 item in" in lines[-1]


def test_big_updates_skip_quarters_without_repeating_them(caplog):
    caplog.set_level(logging.INFO, logger="fusionrec.progress")
    with LogProgress(total=100, desc="images", unit="img") as bar:
        bar.update(60)  # past 25% and 50% at once: one line
        bar.set_postfix(loss="0.5")
        bar.update(40)
    lines = [r.getMessage() for r in caplog.records]
    assert [line.split(", ")[0] for line in lines] == ["images: 60%", "images: done"]  # the end says itself
    assert lines[-1].endswith("loss=0.5")


def test_disabled_progress_says_nothing(caplog):
    caplog.set_level(logging.INFO, logger="fusionrec.progress")
    list(progress(range(10), desc="x", enabled=False))
    assert caplog.records == []
