"""The dataset contract, the two readers and normalisation into one representation."""

import numpy as np
import pandas as pd
import pytest
import yaml

from fusionrec.data.contract import load_contract
from fusionrec.data.dataset import Dataset, normalise
from fusionrec.data.raw import read_raw
from fusionrec.errors import ConfigError, DatasetError
from tests.conftest import MOVIELENS_CONTRACT

pytestmark = pytest.mark.unit


def write_contract(folder, contract: dict):
    path = folder / "dataset.yaml"
    path.write_text(yaml.safe_dump(contract))
    return path


def tiny_catalogue(folder, *, ratings=("5", "3", "4"), parquet=False):
    """Three interactions over two users and two items, as CSV (or Parquet) files."""
    inter = pd.DataFrame(
        {
            "uid": ["a", "b", "a"],
            "iid": ["10", "20", "20"],
            "stars": list(ratings),
            "ts": ["1700000000", "1700000100", "1700000200"],
        }
    )
    items = pd.DataFrame(
        {"iid": ["10", "20"], "name": ["Ten", "Twenty"], "blurb": ["first item", "second item"], "weight": ["1.5", "2"]}
    )
    if parquet:
        inter.to_parquet(folder / "inter.parquet")
    else:
        inter.to_csv(folder / "inter.csv", index=False)
    items.to_csv(folder / "items.csv", index=False)
    return {
        "name": "tiny",
        "format": "raw_catalogue",
        "root": ".",
        "interactions": {
            "path": "inter.parquet" if parquet else "inter.csv",
            "roles": {"user_id": "uid", "item_id": "iid", "rating": "stars", "timestamp": "ts"},
            "implicit": {"min_rating": 4},
        },
        "items": {
            "path": "items.csv",
            "roles": {"item_id": "iid", "title": "name", "text": ["name", "blurb"], "side_features": ["weight"]},
        },
    }


def write_mmrec(folder, n_users=4, n_items=5, dim_text=3, dim_image=2, rows=None):
    """A fake MMRec dataset: tiny.inter (userID, itemID, x_label) plus text_feat.npy and image_feat.npy."""
    rng = np.random.default_rng(0)
    pairs = [(u, i) for u in range(n_users) for i in range(n_items) if (u + i) % 2 == 0]
    inter = pd.DataFrame(pairs, columns=["userID", "itemID"])
    inter["rating"] = 5
    inter["timestamp"] = 1_600_000_000 + np.arange(len(inter))
    inter["x_label"] = [i % 3 for i in range(len(inter))]
    inter.to_csv(folder / "tiny.inter", sep="\t", index=False)
    np.save(folder / "text_feat.npy", rng.normal(size=(rows or n_items, dim_text)).astype(np.float32))
    np.save(folder / "image_feat.npy", rng.normal(size=(n_items, dim_image)).astype(np.float32))
    return {
        "name": "tiny-mmrec",
        "format": "mmrec",
        "root": ".",
        "interactions": {
            "path": "tiny.inter",
            "roles": {"user_id": "userID", "item_id": "itemID", "split": "x_label", "timestamp": "timestamp"},
        },
        "modalities": [{"name": "text", "path": "text_feat.npy"}, {"name": "image", "path": "image_feat.npy"}],
    }, inter


def test_movielens_contract_loads_and_resolves_root():
    c = load_contract(MOVIELENS_CONTRACT)
    assert c.format == "raw_catalogue" and c.items.roles.text == ("title", "overview")
    assert c.root_dir.name == "movielens-100k-mm"
    assert c.resolve("ratings.csv") == c.root_dir / "ratings.csv"


def test_unknown_role_is_named(tmp_path):
    contract = tiny_catalogue(tmp_path)
    contract["interactions"]["roles"]["stars"] = "stars"
    with pytest.raises(ConfigError, match=r"dataset.yaml: unknown key 'interactions.roles.stars'"):
        load_contract(write_contract(tmp_path, contract))


def test_malformed_contract_and_missing_contract(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nformat: [raw\n")
    with pytest.raises(ConfigError, match="bad.yaml: malformed YAML at line"):
        load_contract(bad)
    with pytest.raises(ConfigError, match="absent.yaml: file not found"):
        load_contract(tmp_path / "absent.yaml")


def test_unknown_format_is_named(tmp_path):
    contract = tiny_catalogue(tmp_path)
    contract["format"] = "excel"
    with pytest.raises(ConfigError, match=r"'format'.*'excel'"):
        load_contract(write_contract(tmp_path, contract))


@pytest.mark.parametrize("parquet", [False, True])
def test_raw_catalogue_normalises_to_contiguous_indices(tmp_path, parquet):
    ds = normalise(read_raw(load_contract(write_contract(tmp_path, tiny_catalogue(tmp_path, parquet=parquet)))))
    assert list(ds.items["item_id"]) == [10, 20]  # integer ids stay integers
    assert list(ds.users["user_id"]) == ["a", "b"]
    inter = ds.interactions
    assert list(inter["user_idx"]) == [0, 1, 0] and list(inter["item_idx"]) == [0, 1, 1]
    assert list(inter["label"]) == [1.0, 0.0, 1.0]  # implicit: rating >= 4
    assert inter["timestamp"].tolist() == [1700000000, 1700000100, 1700000200]
    assert ds.items["weight"].dtype == np.float64
    assert ds.text_fields == ("title", "blurb")


def test_wrong_type_names_file_column_and_value(tmp_path):
    contract = write_contract(tmp_path, tiny_catalogue(tmp_path, ratings=("5", "five", "4")))
    with pytest.raises(DatasetError, match=r"inter.csv: column 'rating': value 'five' at line 3 is not a number"):
        normalise(read_raw(load_contract(contract)))


def test_missing_column_names_file_and_column(tmp_path):
    contract = tiny_catalogue(tmp_path)
    contract["interactions"]["roles"]["timestamp"] = "when"
    with pytest.raises(DatasetError, match=r"inter.csv: column 'when' \(role timestamp\) not found"):
        read_raw(load_contract(write_contract(tmp_path, contract)))


def test_missing_file_is_named(tmp_path):
    contract = tiny_catalogue(tmp_path)
    (tmp_path / "items.csv").unlink()
    with pytest.raises(DatasetError, match=r"items.csv: file not found"):
        read_raw(load_contract(write_contract(tmp_path, contract)))


def test_mmrec_keeps_ids_split_and_modalities(tmp_path):
    contract, inter = write_mmrec(tmp_path)
    ds = normalise(read_raw(load_contract(write_contract(tmp_path, contract))))
    assert ds.n_items == 5 and ds.n_users == 4
    assert list(ds.items["item_id"]) == list(range(5)) and list(ds.users["user_id"]) == list(range(4))
    assert (ds.interactions["item_idx"].to_numpy() == inter["itemID"].to_numpy()).all()
    assert (ds.interactions["split"].to_numpy() == inter["x_label"].to_numpy()).all()
    text = np.load(tmp_path / "text_feat.npy")
    np.testing.assert_array_equal(ds.modalities["text"].values, text)
    assert ds.modalities["text"].mask.all() and ds.modalities["image"].dim == 2


def test_precomputed_matrix_with_wrong_rows_names_file_and_both_shapes(tmp_path):
    contract = tiny_catalogue(tmp_path)
    np.save(tmp_path / "audio.npy", np.zeros((3, 4), dtype=np.float32))
    contract["modalities"] = [{"name": "audio", "path": "audio.npy"}]
    with pytest.raises(
        DatasetError,
        match=r"audio.npy: modality 'audio': matrix has shape \(3, 4\) but the items "
        r"table .*items.csv has 2 rows; expected shape \(2, 4\)",
    ):
        read_raw(load_contract(write_contract(tmp_path, contract)))


def test_precomputed_matrix_with_wrong_columns_is_named(tmp_path):
    contract = tiny_catalogue(tmp_path)
    np.save(tmp_path / "audio.npy", np.zeros((2, 4), dtype=np.float32))
    contract["modalities"] = [{"name": "audio", "path": "audio.npy", "dim": 8}]
    with pytest.raises(
        DatasetError, match=r"audio.npy: modality 'audio': matrix has shape \(2, 4\), expected 8 columns"
    ):
        read_raw(load_contract(write_contract(tmp_path, contract)))


def test_precomputed_modality_aligned_by_ids_masks_items_without_a_vector(tmp_path):
    contract = tiny_catalogue(tmp_path)
    np.save(tmp_path / "audio.npy", np.array([[1.0, 2.0], [np.nan, 0.0]], dtype=np.float32))
    (tmp_path / "audio_ids.txt").write_text("20\n99\n")
    contract["modalities"] = [{"name": "audio", "path": "audio.npy", "ids_path": "audio_ids.txt"}]
    ds = normalise(read_raw(load_contract(write_contract(tmp_path, contract))))
    m = ds.modalities["audio"]
    assert m.mask.tolist() == [False, True]  # item 10 has no vector; item 20 has row 0
    np.testing.assert_array_equal(m.values[1], [1.0, 2.0])
    assert not m.values[0].any()


def test_dataset_round_trips_through_disk(tmp_path):
    contract, _ = write_mmrec(tmp_path)
    ds = normalise(read_raw(load_contract(write_contract(tmp_path, contract))))
    out = tmp_path / "saved"
    out.mkdir()
    ds.save(out)
    back = Dataset.load(out)
    pd.testing.assert_frame_equal(back.interactions, ds.interactions)
    np.testing.assert_array_equal(back.modalities["image"].values, ds.modalities["image"].values)
    assert back.summary() == ds.summary()


def test_loading_a_folder_that_is_not_a_dataset_says_what_to_do(tmp_path):
    with pytest.raises(DatasetError, match="run 'fusionrec data validate'"):
        Dataset.load(tmp_path)


@pytest.mark.parametrize(
    "ids, kept",
    [
        (["0108775015", "0108775016"], ["0108775015", "0108775016"]),  # article numbers with a leading zero
        (["7", "0042"], ["7", "0042"]),  # one with a leading zero: every id keeps its written form
        (["+7", "8"], ["+7", "8"]),
        (["1e3", "8"], ["1e3", "8"]),
        (["12345678901234567890", "8"], ["12345678901234567890", "8"]),  # beyond an int64
        (["-3", "0"], [-3, 0]),  # written as integers are written: integers
    ],
)
def test_item_ids_come_out_as_the_data_wrote_them(tmp_path, ids, kept):
    contract = tiny_catalogue(tmp_path)
    inter = pd.read_csv(tmp_path / "inter.csv", dtype=str)
    items = pd.read_csv(tmp_path / "items.csv", dtype=str)
    inter["iid"] = inter["iid"].map(dict(zip(["10", "20"], ids)))
    items["iid"] = ids
    inter.to_csv(tmp_path / "inter.csv", index=False)
    items.to_csv(tmp_path / "items.csv", index=False)
    ds = normalise(read_raw(load_contract(write_contract(tmp_path, contract))))
    assert list(ds.items["item_id"]) == kept
    assert [str(i) for i in ds.items["item_id"]] == ids  # what an answer writes is what the data wrote
