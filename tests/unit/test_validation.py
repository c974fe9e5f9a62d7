"""Great Expectations validation: counts, budgets, quarantine, content checks, all-or-nothing output."""

import json

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from fusionrec.config import ValidationSettings
from fusionrec.data.contract import load_contract
from fusionrec.data.dataset import Dataset
from fusionrec.data.raw import read_raw
from fusionrec.errors import ConfigError, ValidationFailed
from fusionrec.validation import validate, validate_dataset
from tests.unit.test_contract_and_readers import tiny_catalogue, write_contract, write_mmrec

pytestmark = pytest.mark.unit
NOW = 1_800_000_000.0


def run(folder, contract, cfg=None):
    return validate(
        read_raw(load_contract(write_contract(folder, contract))), cfg or ValidationSettings(), progress=False, now=NOW
    )


def test_planted_defects_are_found_and_counted_exactly(synth_defects, settings, tmp_path):
    truth = json.loads((synth_defects / "truth" / "truth.json").read_text())["defects"]
    out = tmp_path / "clean"
    outcome = validate_dataset(synth_defects / "dataset.yaml", out, settings.validation, progress=False)
    counts = outcome.counts()
    assert counts["items.item_id_unique"] == truth["duplicate_items"]
    assert counts["items.image_present"] == truth["missing_images"]
    assert counts["items.image_decodes"] == truth["corrupt_images"]
    assert counts["items.text_present[description]"] == truth["missing_text"]
    assert counts["interactions.item_known"] == truth["unknown_items"]
    assert counts["interactions.rating_is_number"] == truth["bad_ratings"]
    q = pd.read_csv(out / "quarantine.csv")
    dropped_inter = q[(q["table"] == "interactions") & (q["action"] == "dropped")]
    assert len(dropped_inter) == truth["unknown_items"] + truth["bad_ratings"]
    ds = Dataset.load(out)
    total = json.loads((synth_defects / "truth" / "truth.json").read_text())["counts"]["interactions"]
    assert len(ds.interactions) == total - len(dropped_inter)  # nothing lost beyond the quarantine
    assert ds.items["item_id"].is_unique and ds.n_items == 100
    assert ds.items["image"].isna().sum() == truth["missing_images"] + truth["corrupt_images"]
    report = json.loads((out / "report.json").read_text())
    assert report["passed"] and report["great_expectations"]["results"]["items"]["results"]
    assert "<html>" in (out / "report.html").read_text()


def test_over_budget_fails_writes_nothing_and_keeps_the_last_good_output(
    synth_clean, synth_defects, settings, tmp_path
):
    out = tmp_path / "validated"
    validate_dataset(synth_clean / "dataset.yaml", out, settings.validation, progress=False)
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    strict = yaml.safe_load((synth_defects / "dataset.yaml").read_text())
    strict.pop("checks")  # default budgets: 0% for duplicate ids
    contract = tmp_path / "strict.yaml"
    strict["root"] = str(synth_defects)
    contract.write_text(yaml.safe_dump(strict))
    with pytest.raises(ValidationFailed) as err:
        validate_dataset(contract, out, settings.validation, progress=False)
    message = str(err.value)
    assert "items.csv: column 'item_id'" in message and "[items.item_id_unique]" in message
    assert "budget 0.00%" in message
    after = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    assert after == before  # the good output is untouched
    rejected = tmp_path / "validated.rejected"
    assert not json.loads((rejected / "report.json").read_text())["passed"]
    assert not (rejected / "items.parquet").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left behind


def test_wrong_typed_ratings_column_fails_naming_file_column_and_value(tmp_path):
    outcome = run(tmp_path, tiny_catalogue(tmp_path, ratings=("five", "three", "four")))
    failed = {r.key: r for r in outcome.failures()}
    line = failed["interactions.rating_is_number"].summary()
    assert "inter.csv: column 'rating': 3 of 3 records (100.00%)" in line and "'five' at line 2" in line


def test_referential_integrity_and_duplicates_drop_interactions(tmp_path):
    contract = tiny_catalogue(tmp_path)
    inter = pd.read_csv(tmp_path / "inter.csv", dtype=str)
    extra = pd.DataFrame(
        {"uid": ["a", "a"], "iid": ["99", "10"], "stars": ["5", "5"], "ts": ["1700000300", "1700000000"]}
    )
    pd.concat([inter, extra]).to_csv(tmp_path / "inter.csv", index=False)
    contract["checks"] = {
        "interactions.item_known": {"budget": 0.5},
        "interactions.interaction_unique": {"budget": 0.5},
    }
    outcome = run(tmp_path, contract)
    assert outcome.counts()["interactions.item_known"] == 1
    assert outcome.counts()["interactions.interaction_unique"] == 1  # (a, 10, 1700000000) repeated
    assert len(outcome.clean.interactions) == 3
    reasons = set(outcome.quarantine["checks"])
    assert {"interactions.item_known", "interactions.interaction_unique"} <= reasons


def test_timestamps_in_the_future_or_unparseable_are_rejected(tmp_path):
    contract = tiny_catalogue(tmp_path)
    inter = pd.read_csv(tmp_path / "inter.csv", dtype=str)
    inter.loc[1, "ts"] = str(int(NOW) + 10 * 86_400)
    inter.loc[2, "ts"] = "yesterday"
    inter.to_csv(tmp_path / "inter.csv", index=False)
    outcome = run(tmp_path, contract)
    assert outcome.counts()["interactions.timestamp_in_range"] == 1
    assert outcome.counts()["interactions.timestamp_parses"] == 1
    assert not outcome.passed


def test_images_that_are_bombs_corrupt_or_tiny_are_masked_not_decoded(tmp_path):
    contract = tiny_catalogue(tmp_path)
    items = pd.read_csv(tmp_path / "items.csv", dtype=str)
    items = pd.concat(
        [
            items,
            pd.DataFrame(
                {"iid": ["30", "40"], "name": ["Thirty", "Forty"], "blurb": ["third", "fourth"], "weight": ["1", "1"]}
            ),
        ]
    )
    items["img"] = ["big.png", "bad.jpg", "tiny.png", "ok.png"]
    items.to_csv(tmp_path / "items.csv", index=False)
    # 6000x6000 is 36 Mpx: over the 1 Mpx limit set below. A 1-bit PNG of it is tiny on disk.
    Image.new("1", (6000, 6000)).save(tmp_path / "big.png")
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0garbage")
    Image.new("RGB", (4, 4)).save(tmp_path / "tiny.png")
    Image.new("RGB", (32, 32)).save(tmp_path / "ok.png")
    contract["items"]["roles"]["image"] = "img"
    contract["checks"] = {"items.image_size": {"budget": 1.0}, "items.image_decodes": {"budget": 1.0}}
    outcome = run(tmp_path, contract, ValidationSettings(max_image_pixels=1_000_000))
    assert outcome.counts()["items.image_size"] == 2  # bomb and tiny
    assert outcome.counts()["items.image_decodes"] == 1
    images = outcome.clean.items.set_index("item_id")["image"]
    assert images[["10", "20", "30"]].isna().all() and images["40"] == "ok.png"
    assert len(outcome.clean.items) == 4  # masked, not dropped


def test_text_over_the_length_limit_is_masked(tmp_path):
    contract = tiny_catalogue(tmp_path)
    items = pd.read_csv(tmp_path / "items.csv", dtype=str)
    items.loc[0, "blurb"] = "write to jane@example.com " * 2
    items.to_csv(tmp_path / "items.csv", index=False)
    contract["checks"] = {"items.text_length": {"budget": 1.0}}
    outcome = run(tmp_path, contract, ValidationSettings(max_text_chars=20))
    assert outcome.counts()["items.text_length[blurb]"] == 1
    assert outcome.clean.items["blurb"].isna().tolist() == [True, False]
    # Free text never reaches the report: its length does.
    assert "<52 characters>" in outcome.quarantine["reason"].iloc[0]
    everything = (
        json.dumps(outcome.gx_results) + outcome.quarantine.to_csv() + json.dumps([r.examples for r in outcome.results])
    )
    assert "jane@example.com" not in everything


def test_unknown_check_in_contract_is_a_config_error(tmp_path):
    contract = tiny_catalogue(tmp_path)
    contract["checks"] = {"items.colour_matches": {"budget": 0.1}}
    with pytest.raises(ConfigError, match=r"unknown check\(s\) \['items.colour_matches'\]"):
        run(tmp_path, contract)


def test_mmrec_split_and_item_range_are_checked(tmp_path):
    contract, inter = write_mmrec(tmp_path)
    inter.loc[0, "x_label"] = 7
    inter.loc[1, "itemID"] = 99
    inter.to_csv(tmp_path / "tiny.inter", sep="\t", index=False)
    outcome = run(tmp_path, contract)
    assert outcome.counts()["interactions.split_is_known"] == 1
    assert outcome.counts()["interactions.item_known"] == 1


def test_non_finite_precomputed_vectors_are_masked(tmp_path):
    contract, _ = write_mmrec(tmp_path)
    text = np.load(tmp_path / "text_feat.npy")
    text[2, 1] = np.inf
    np.save(tmp_path / "text_feat.npy", text)
    contract["checks"] = {"modality:text.modality_finite": {"budget": 0.5}}
    outcome = run(tmp_path, contract)
    assert outcome.counts()["modality:text.modality_finite[text]"] == 1
    from fusionrec.data.dataset import normalise

    assert normalise(outcome.clean).modalities["text"].mask.tolist() == [True, True, False, True, True]


def test_every_record_check_counts_exactly_the_records_planted_for_it(tmp_path):
    """One planted defect per check, each in its own record; every other check finds nothing."""
    T = 1_700_000_000
    pd.DataFrame(
        {
            "uid": ["a", "b", "a", None, "b", "zz", "b", "a"],
            "iid": ["10", "20", "20", "10", None, "10", "10", "20"],
            "stars": [5.0, 3.0, 4.0, 4.0, 4.0, 4.0, 9.0, 2.0],
            "ts": [T, T + 1, T + 2, T + 3, T + 4, T + 5, T + 6, 1_500_000_000],
        }
    ).to_parquet(tmp_path / "inter.parquet")
    pd.DataFrame(
        {"iid": ["10", "20", None], "name": ["Ten", "Twenty", "Nobody"], "img": ["ok.png", "wide.png", "ok.png"]}
    ).to_parquet(tmp_path / "items.parquet")
    pd.DataFrame({"uid": ["a", "b", "a", None], "age": [30.0, 40.0, 50.0, 60.0]}).to_parquet(tmp_path / "users.parquet")
    Image.new("RGB", (32, 32)).save(tmp_path / "ok.png")
    Image.new("RGB", (300, 20)).save(tmp_path / "wide.png")  # wider than max_image_side below
    contract = {
        "name": "planted",
        "format": "raw_catalogue",
        "root": ".",
        "interactions": {
            "path": "inter.parquet",
            "rating_range": [1, 5],
            "roles": {"user_id": "uid", "item_id": "iid", "rating": "stars", "timestamp": "ts"},
        },
        "items": {
            "path": "items.parquet",
            "roles": {"item_id": "iid", "title": "name", "text": ["name"], "image": "img"},
        },
        "users": {"path": "users.parquet", "roles": {"user_id": "uid", "side_features": ["age"]}},
    }
    planted = {
        "interactions.user_id_present": 1,
        "interactions.item_id_present": 1,
        "interactions.user_known": 1,
        "interactions.rating_in_range": 1,
        "interactions.timestamp_in_range": 1,
        "users.user_id_present": 1,
        "users.user_id_unique": 1,
        "items.item_id_present": 1,
        "items.image_size": 1,
    }
    contract["checks"] = {k: {"budget": 1.0} for k in planted}
    cfg = ValidationSettings(max_image_side=256, min_timestamp=1_600_000_000)
    outcome = run(tmp_path, contract, cfg)
    found = {k: v for k, v in outcome.counts().items() if v}
    assert found == planted
    assert outcome.passed  # within the budgets given
    # the interactions with a missing id, an unknown user, a rating out of range or a timestamp too old are gone
    assert len(outcome.clean.interactions) == 8 - 5
    assert outcome.clean.users["user_id"].tolist() == ["a", "b"] and outcome.clean.items["item_id"].tolist() == [
        "10",
        "20",
    ]
    # the same data under the default budgets fails, naming each check over its budget
    contract.pop("checks")
    failed = {r.key for r in run(tmp_path, contract, cfg).failures()}
    assert {"interactions.rating_in_range", "interactions.user_known", "users.user_id_unique"} <= failed


def test_labels_other_than_0_or_1_are_rejected(tmp_path):
    pd.DataFrame(
        {
            "uid": ["a", "b", "a", "b"],
            "iid": ["10", "20", "20", "10"],
            "clicked": [1, 0, 2, 1],
            "ts": [1_700_000_000 + k for k in range(4)],
        }
    ).to_parquet(tmp_path / "inter.parquet")
    pd.DataFrame({"iid": ["10", "20"], "name": ["Ten", "Twenty"]}).to_parquet(tmp_path / "items.parquet")
    contract = {
        "name": "labels",
        "format": "raw_catalogue",
        "root": ".",
        "interactions": {
            "path": "inter.parquet",
            "roles": {"user_id": "uid", "item_id": "iid", "label": "clicked", "timestamp": "ts"},
        },
        "items": {"path": "items.parquet", "roles": {"item_id": "iid", "text": ["name"]}},
        "checks": {"interactions.label_is_binary": {"budget": 0.5}},
    }
    outcome = run(tmp_path, contract)
    assert {k: v for k, v in outcome.counts().items() if v} == {"interactions.label_is_binary": 1}
    assert sorted(outcome.clean.interactions["label"].astype(int).tolist()) == [0, 1, 1]
    contract.pop("checks")
    failure = {r.key: r for r in run(tmp_path, contract).failures()}["interactions.label_is_binary"]
    assert "column 'label'" in failure.summary() or "column 'clicked'" in failure.summary()
