"""Every bar a published figure names is met, or is a known gap listed here as a strict xfail.

The figures are the benchmarks' records in docs/figures (benchmarks/summary.py --publish copies them
there). A new figure that misses its bar fails this test until it is met or listed below with the
reason; a listed gap that a new record meets fails it too (strict), so the list cannot outlive the gap.
"""

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit
KEPT = Path(__file__).resolve().parents[2] / "docs" / "figures"

# (benchmark, figure key) -> why the bar is not met yet (docs/benchmarks.md has the figures)
KNOWN_GAPS = {
    ("accuracy", "warm"): "1.035x EASE on both metrics on the reporting seeds (bar 1.05x; 1.03x before issue 25)",
    ("accuracy", "sampled"): "the sampled softmax is 0.989x the full softmax's Recall@20, not within 1%",
    ("drift", "policy"): "on fresh windows off-topic text queries are caught at a share of 0.2, not at the 0.1 where "
    "Recall@20 is already down 10% (met on the development windows)",
    ("retrieval", "cross_modal"): "a genre named in words finds posters through the bridge at 2.3x a random "
    "list of the same held-out items (bar 3x; a classifier on the genre labels reaches 2.8-3.4x)",
    ("accuracy_synthetic", "synthetic10k_random"): "the generator's movie-like catalogue at 10,000 items: 1.057x and "
    "1.039x Cornac BPR on 5 reporting seeds (bar 1.05x on both; NDCG@20 short); with Cornac BPR's wider grid, on "
    "seed 10 it is 0.92x / 0.91x that peer",
    ("accuracy_sparse", "thinned_temporal"): "movielens-100k-mm thinned to 3 training positives per item, "
    "temporal split: 1.05x and 0.96x the content peer on 5 reporting seeds (bar 1.10x)",
}


def _barred() -> list[tuple[str, str, dict]]:
    out = []
    for path in sorted(KEPT.glob("*.json")):
        record = json.loads(path.read_text(encoding="utf-8"))
        out += [(record["benchmark"], f["key"], f) for f in record["figures"] if f.get("bar") is not None]
    return out


def test_the_known_gaps_name_published_figures_with_bars():
    barred = {(b, k) for b, k, _ in _barred()}
    assert barred  # the records name bars
    assert set(KNOWN_GAPS) <= barred, set(KNOWN_GAPS) - barred


@pytest.mark.parametrize(
    "benchmark, key, figure",
    [
        pytest.param(b, k, f, id=f"{b}-{k}", marks=[pytest.mark.xfail(strict=True, reason=KNOWN_GAPS[(b, k)])])
        if (b, k) in KNOWN_GAPS
        else pytest.param(b, k, f, id=f"{b}-{k}")
        for b, k, f in _barred()
    ],
)
def test_a_published_figure_meets_its_bar(benchmark, key, figure):
    assert figure["met"] is True, f"{benchmark} {key}: {figure['figure']} (bar: {figure['bar']})"
