"""Validation of the real movielens-100k-mm data: the defects its README describes are found and counted."""

import json

import pandas as pd
import pytest

from fusionrec.data.dataset import Dataset
from fusionrec.validation import validate_dataset
from tests.conftest import MOVIELENS_CONTRACT

pytestmark = [pytest.mark.integration, pytest.mark.realdata]


@pytest.fixture(scope="module")
def validated(movielens, tmp_path_factory):
    from fusionrec.config import Settings

    out = tmp_path_factory.mktemp("ml") / "validated"
    outcome = validate_dataset(MOVIELENS_CONTRACT, out, Settings().validation, progress=False)
    return outcome, out


def test_readme_defects_are_counted(validated, movielens):
    outcome, _ = validated
    raw = pd.read_csv(movielens / "items.csv")
    counts = outcome.counts()
    surplus = len(raw) - raw["movie_id"].nunique()  # 1,746 rows for 1,682 ids
    assert counts["items.item_id_unique"] == surplus == 64
    assert counts["items.text_present[overview]"] == 18
    assert counts["items.image_present"] == 19  # rows whose poster file is absent
    assert outcome.passed


def test_clean_dataset_has_every_movie_once_and_every_rating(validated):
    _, out = validated
    ds = Dataset.load(out)
    assert ds.n_items == 1682 and ds.n_users == 943 and len(ds.interactions) == 100_000
    assert ds.items["item_id"].is_unique
    assert ds.items["overview"].isna().sum() == 18
    assert ds.items["image"].isna().sum() == 19
    assert (ds.interactions["label"] == 1).all()  # every rating is an implicit positive
    report = json.loads((out / "report.json").read_text())
    assert report["clean"]["items_with_image"] == 1682 - 19
