"""Side features as a modality: each column encoded the way its values call for, by hand."""

import numpy as np
import pandas as pd
import pytest

from fusionrec.encoders import tabular

pytestmark = pytest.mark.unit


def items():
    return pd.DataFrame(
        {
            "price": [1.0, 2.0, 3.0, np.nan, 2.0, 4.0],
            "votes": [0.0, 3.0, 10.0, 5000.0, 2.0, 1.0],  # a count with a long tail
            "lang": ["en", "en", "fr", "en", None, "en"],
        }
    )


def test_each_column_is_encoded_as_its_values_call_for():
    frame = items()
    spec = tabular.fit_columns(frame, ("price", "votes", "lang"))
    # lang: 'en' is held by 4 items, 'fr' by 1, both under MIN_ITEMS (5): no level, so no column
    assert [(c.name, c.kind, c.log) for c in spec] == [("price", "numeric", False), ("votes", "numeric", True)]
    values, mask = tabular.encode(frame, spec)
    price = np.array([1, 2, 3, 2, 4.0])
    z = (np.array([1, 2, 3, 0, 2, 4.0]) - price.mean()) / price.std() * np.array([1, 1, 1, 0, 1, 1])
    assert values[:, 0] == pytest.approx(z, abs=1e-6)
    assert values[:, 1].tolist() == [0, 0, 0, 1, 0, 0]  # price missing for the fourth item
    votes = np.log1p(frame["votes"].to_numpy())
    assert values[:, 2] == pytest.approx((votes - votes.mean()) / votes.std(), abs=1e-6)
    assert values.shape == (6, 4) and mask.all()


def test_an_item_without_any_side_feature_is_masked_and_all_zeros():
    frame = pd.DataFrame({"price": [1.0, np.nan, 3.0], "lang": ["a", None, "a"]})
    spec = tabular.fit_columns(frame, ("price", "lang"))
    values, mask = tabular.encode(frame, spec)
    assert mask.tolist() == [True, False, True]
    assert not values[1].any()


def test_frequent_levels_are_one_hot_and_rare_ones_all_zeros():
    frame = pd.DataFrame({"lang": ["en"] * 6 + ["fr"] * 5 + ["de"]})
    spec = tabular.fit_columns(frame, ("lang",))
    values, _ = tabular.encode(frame, spec)
    assert spec[0].levels == ("en", "fr")
    assert values.tolist() == [[1, 0]] * 6 + [[0, 1]] * 5 + [[0, 0]]


def test_the_identity_changes_with_the_columns_and_their_encoding():
    frame = items()
    a = tabular.identity(tabular.fit_columns(frame, ("price", "votes")))
    b = tabular.identity(tabular.fit_columns(frame, ("price",)))
    assert a != b and a.startswith("tabular/4/")
