"""Ids with leading zeros (article numbers, SKUs) round-trip as the data wrote them: validated, trained on,
materialised into Feast and answered by the running servers, and a caller's own id is found."""

import re

import httpx
import pytest

from fusionrec.data.synth import SynthConfig, generate
from tests.champion import trained_champion
from tests.stack import AUTH, serve

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def shop(tmp_path_factory, text_encoder, image_encoder, settings, free_port):
    """The synthetic long-tail shop (ids like 0000001002), trained, materialised and served."""
    from fusionrec.config import PathsSettings, Settings
    from fusionrec.data.dataset import Dataset
    from fusionrec.encoders.pipeline import encode_dataset
    from fusionrec.validation import validate_dataset

    root = tmp_path_factory.mktemp("zeros")
    generate(SynthConfig(users=80, items=60, seed=3, catalogue="longtail", workers=1), root / "raw", progress=False)
    validate_dataset(root / "raw" / "dataset.yaml", root / "validated", settings.validation, progress=False)
    ds = Dataset.load(root / "validated")
    cache = Settings(paths=PathsSettings(artifacts=str(root / "cache"), cache=str(root / "cache")))
    emb = encode_dataset(ds, cache, encoders={"text": text_encoder, "image": image_encoder}, progress=False)
    trained_champion(root / "models", ds, emb)
    servers = serve(root, root / "models", ds, emb, free_port)
    yield {"ds": ds, "url": servers.transformer_url}
    servers.stop()


def _ask(shop, instance):
    return httpx.post(f"{shop['url']}/v1/models/fusionrec:predict", json={"instances": [instance]}, headers=AUTH)


def test_ids_with_leading_zeros_are_kept_in_the_data_and_every_answer(shop):
    ids = shop["ds"].items["item_id"].astype(str)
    assert all(re.fullmatch(r"0\d{9}", i) for i in ids)  # written as article numbers
    like = ids.iloc[5]
    r = _ask(shop, {"like": like, "k": 5})
    assert r.status_code == 200, r.text
    got = [x["item_id"] for x in r.json()["predictions"][0]["items"]]
    assert len(got) == 5 and like not in got
    assert set(got) <= set(ids)  # as the catalogue writes them: 0000001002, not 1002
    user = str(shop["ds"].users["user_id"].iloc[0])
    r = _ask(shop, {"user_id": user, "k": 5, "exclude": [got[0]]})
    assert r.status_code == 200, r.text
    answered = [x["item_id"] for x in r.json()["predictions"][0]["items"]]
    assert set(answered) <= set(ids) and got[0] not in answered
    stripped = like.lstrip("0")  # the id read as a number is not the catalogue's id
    r = _ask(shop, {"like": stripped})
    assert r.status_code == 404 and "unknown item ids" in r.text
