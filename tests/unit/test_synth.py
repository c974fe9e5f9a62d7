"""The synthetic generator: deterministic per seed, and its planted tastes are really there."""

import hashlib

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from fusionrec.data.synth import COLOURS, GENRES, SynthConfig, generate

pytestmark = pytest.mark.unit


def digest(folder):
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(folder).as_posix().encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    cfg = SynthConfig(users=40, items=200, seed=3, workers=1)  # 200 items: the pool renders
    a = generate(cfg, tmp_path / "a", progress=False).folder
    b = generate(cfg.model_copy(update={"workers": 2}), tmp_path / "b", progress=False).folder
    c = generate(cfg.model_copy(update={"seed": 4}), tmp_path / "c", progress=False).folder
    assert digest(a) == digest(b)
    assert digest(a) != digest(c)


def test_interaction_count_is_the_one_asked_for(tmp_path):
    r = generate(SynthConfig(users=50, items=40, interactions=777, seed=1, workers=1), tmp_path / "d", progress=False)
    assert len(pd.read_parquet(r.folder / "interactions.parquet")) == 777
    inter = pd.read_parquet(r.folder / "interactions.parquet")
    assert not inter.duplicated(["user_id", "item_id"]).any()  # no user meets the same item twice


def test_users_prefer_their_planted_genre_and_colour(synth_clean):
    inter = pd.read_parquet(synth_clean / "interactions.parquet")
    items = pd.read_parquet(synth_clean / "truth" / "items.parquet").set_index("item_id")
    users = pd.read_parquet(synth_clean / "truth" / "users.parquet").set_index("user_id")
    joined = inter.join(items, on="item_id").join(users, on="user_id", rsuffix="_liked")
    genre_hit = (joined["genre"] == joined["genre_liked"]).mean()
    colour_hit = (joined["colour"] == joined["colour_liked"]).mean()
    chance_g, chance_c = 1 / len(GENRES), 1 / len(COLOURS)
    assert genre_hit > 2 * chance_g and colour_hit > 2 * chance_c
    tempo_by_user = joined.groupby("user_id")["tempo"].agg(lambda s: s.value_counts(normalize=True).max()).mean()
    assert tempo_by_user < 0.7  # tempo is a distractor: no user concentrates on one


def test_genre_is_only_in_the_text_and_colour_only_in_the_image(synth_clean):
    catalogue = pd.read_csv(synth_clean / "items.csv")
    truth = pd.read_parquet(synth_clean / "truth" / "items.parquet")
    for (_, row), (_, t) in list(zip(catalogue.iterrows(), truth.iterrows()))[:30]:
        text = row["description"].lower()
        assert any(w in text for w in GENRES[t["genre"]])
        assert not any(colour in text for colour in COLOURS)
        pixels = np.asarray(Image.open(synth_clean / row["image"]).convert("RGB")).reshape(-1, 3).astype(int)
        centre = pixels.reshape(64, 64, 3)[28:36, 28:36].reshape(-1, 3).mean(axis=0)
        nearest = min(COLOURS, key=lambda c: np.abs(np.array(COLOURS[c]) - centre).sum())
        assert nearest == t["colour"]


def test_written_contract_validates(synth_clean, settings, tmp_path):
    from fusionrec.validation import validate_dataset

    outcome = validate_dataset(synth_clean / "dataset.yaml", tmp_path / "v", settings.validation, progress=False)
    assert outcome.passed and len(outcome.quarantine) == 0


def test_the_long_tail_shop_has_product_families_rare_items_and_article_numbers(tmp_path):
    """catalogue=longtail: families of one genre, shape, texture and description in 2-6 distinct colours;
    8 purchases a user; most items bought once or twice; ids with a leading zero that stay strings."""
    from fusionrec.data.contract import load_contract
    from fusionrec.data.dataset import normalise
    from fusionrec.data.raw import read_raw

    r = generate(
        SynthConfig(users=300, items=1800, seed=2, workers=1, image_size=16, catalogue="longtail"),
        tmp_path / "s",
        progress=False,
    )
    truth = pd.read_parquet(r.folder / "truth" / "items.parquet")
    items = pd.read_csv(r.folder / "items.csv", dtype=str)
    inter = pd.read_parquet(r.folder / "interactions.parquet")
    families = truth.merge(items[["item_id", "description"]], on="item_id").groupby("family")
    assert families.size().between(2, 6).all()
    assert (families["colour"].nunique() == families.size()).all()  # each member its own colour
    for column in ("genre", "shape", "texture", "description"):
        assert (families[column].nunique() == 1).all(), column
    assert len(inter) == 8 * 300
    per_item = inter["item_id"].value_counts().reindex(items["item_id"], fill_value=0)
    assert ((per_item >= 1) & (per_item <= 2)).sum() > 0.5 * (per_item >= 1).sum()
    assert items["item_id"].str.fullmatch(r"0\d{9}").all()
    # about half of a shopper's purchases are another colour of a family they bought, their colour first
    bought = inter.merge(truth, on="item_id").merge(
        pd.read_parquet(r.folder / "truth" / "users.parquet"), on="user_id", suffixes=("", "_liked")
    )
    repeat = bought.groupby(["user_id", "family"])["item_id"].transform("size") > 1
    families_bought = bought.groupby("user_id")["family"].nunique().sum() / len(bought)  # 1 without siblings
    assert 0.45 < families_bought < 0.65, families_bought
    assert (bought["colour"] == bought["colour_liked"])[repeat].mean() > 0.3  # 1 in 6 colours by chance
    ds = normalise(read_raw(load_contract(r.contract_path)))
    assert ds.items["item_id"].tolist() == items["item_id"].tolist()  # "0000670001" stays "0000670001"


def test_shop_titles_name_what_the_photo_shows_and_change_nothing_else(tmp_path):
    """titles="shop": each title names its item's shape and colour (the pattern for about half the families),
    every colour of a product carries its family's print, and the interactions are those of the same seed
    without them."""
    import pandas as pd
    from PIL import Image

    from fusionrec.data.synth import PATTERN_WORDS

    base = dict(users=200, items=600, seed=3, workers=1, image_size=64, catalogue="longtail")
    plain = generate(SynthConfig(**base), tmp_path / "names", progress=False)
    shop = generate(SynthConfig(**base, titles="shop"), tmp_path / "shop", progress=False)
    a = pd.read_parquet(plain.folder / "interactions.parquet")
    b = pd.read_parquet(shop.folder / "interactions.parquet")
    pd.testing.assert_frame_equal(a, b)
    items = pd.read_csv(shop.folder / "items.csv", dtype={"item_id": str})
    truth = pd.read_parquet(shop.folder / "truth" / "items.parquet")
    titles = items["title"].str.lower()
    assert all(s in t and c in t for t, s, c in zip(titles, truth["shape"], truth["colour"]))
    named = [PATTERN_WORDS[x] in t for t, x in zip(titles, truth["texture"])]
    by_family = pd.Series(named).groupby(truth["family"]).all()
    assert 0.3 < by_family.mean() < 0.7

    def ink(path):  # the print's dark pixels (the colours and backgrounds are all lighter)
        return (np.asarray(Image.open(path).convert("L")) < 50).mean()

    first = truth.groupby("family").head(2).groupby("family").filter(lambda f: len(f) == 2).iloc[:20]
    pairs = first["item_id"].to_numpy().reshape(-1, 2)
    assert all(ink(shop.folder / "images" / f"{x}.jpg") > 0.01 for x, _ in pairs)
    assert all(ink(plain.folder / "images" / f"{x}.jpg") < 0.005 for x, _ in pairs)
    same = [abs(ink(shop.folder / "images" / f"{x}.jpg") - ink(shop.folder / "images" / f"{y}.jpg")) for x, y in pairs]
    assert np.median(same) < 0.02
