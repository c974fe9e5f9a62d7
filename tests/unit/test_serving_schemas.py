"""The serving API's schema and its v1/v2 wire forms, and the transformer's preprocessing."""

import asyncio
import base64

import numpy as np
import pytest

from fusionrec.api.schemas import (
    Result,
    parse_v1,
    parse_v2,
    result_to_dict,
    results_from_v2,
    results_to_v2,
    to_v1,
    to_v2,
)
from fusionrec.config import ServingSettings
from fusionrec.errors import BadRequest, PayloadTooLarge

pytestmark = pytest.mark.unit
LIMITS = ServingSettings()


def _png_bytes(side: int = 4) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (side, side), (200, 30, 30)).save(buf, "PNG")
    return buf.getvalue()


PNG = _png_bytes()


def test_v2_round_trip_keeps_ragged_lists_and_tells_empty_candidates_from_none():
    rows = parse_v1(
        {
            "instances": [
                {"user_id": 7, "history": ["a", "b", "c"], "k": 3, "candidates": []},
                {"history": ["d"], "exclude": ["x"], "exclude_seen": False},
                {"text": "red dress", "image": base64.b64encode(PNG).decode(), "k": 2},
                {"like": "i9", "user_id": "u1", "blend": 0.5, "k": 4},
                {"text": "a red coat", "history": ["a"], "exclude_seen": True},
            ]
        },
        LIMITS,
    )
    from kserve import InferRequest
    from kserve.protocol.rest.v2_datamodels import InferenceRequest

    wire = to_v2(rows, "m")  # through JSON, the way the predictor's v2 endpoint decodes it
    decoded = InferRequest.from_inference_request(InferenceRequest.model_validate(wire.to_rest()[0]), "m")
    back = parse_v2(decoded, LIMITS)
    assert back == rows
    assert rows[0].user_id == "7" and rows[0].candidates == [] and rows[1].candidates is None
    assert rows[2].kind == "query" and rows[2].image == PNG
    assert rows[3].kind == "query" and rows[3].like == "i9" and rows[3].blend == 0.5 and rows[3].user_id == "u1"
    assert rows[4].history == ["a"] and rows[4].blend is None and rows[4].exclude_seen  # NaN on v2: the default
    # the defaults per kind: a query keeps seen items, and so does a candidate list (scored as given)
    assert not rows[2].exclude_seen and rows[1].exclude_seen is False and not rows[0].exclude_seen
    assert parse_v1(to_v1(rows), LIMITS) == rows


def test_v2_results_round_trip_to_the_v1_answer():
    from kserve import InferResponse

    results = [
        Result(
            ["i1", "i2"],
            ["One", "Two"],
            ["1.jpg", "2.jpg"],
            np.array([2.0, 1.0], dtype=np.float32),
            np.array([[0.25, 0.75], [0.5, 0.5]], dtype=np.float32),
        ),
        Result(
            ["i3"],
            ["Three"],
            [""],
            np.array([0.5], dtype=np.float32),
            np.array([[1.0, 0.0]], dtype=np.float32),
            fallback=True,
        ),
    ]
    wire = results_to_v2(results, ["image", "text"], "v0009", "m")
    back = results_from_v2(InferResponse.from_rest(wire.to_rest()[0]))
    assert back == [result_to_dict(r, ["image", "text"], "v0009") for r in results]
    assert back[1]["fallback"] and len(back[1]["items"]) == 1  # padding to the largest k is removed


@pytest.mark.parametrize(
    "payload,err,words",
    [
        ({"instances": [{"k": True}]}, BadRequest, "k"),
        ({"instances": [{"user_id": 1.5}]}, BadRequest, "user_id"),
        ({"instances": [{"candidates": ["a"] * 6000}]}, PayloadTooLarge, "candidates"),
        ({"instances": [{"text": "   "}]}, BadRequest, "empty"),
        ({"instances": [{"image": ""}]}, BadRequest, "empty"),
        ({"instances": [], "extra": 1}, BadRequest, "extra"),
        ({"instances": [{"like": "a", "blend": 1.5}]}, BadRequest, "between 0 and 1"),
        ({"instances": [{"user_id": "u", "blend": 0.5}]}, BadRequest, "no query"),
        ({"instances": [{"text": "red", "space": "colour"}]}, BadRequest, "space must be one of"),
        ({"instances": [{"user_id": "u", "space": "text"}]}, BadRequest, "no query"),
        ({"instances": [{"like": ["a"]}]}, BadRequest, "like"),
    ],
)
def test_schema_refuses_with_a_message(payload, err, words):
    with pytest.raises(err, match=words):
        parse_v1(payload, LIMITS)


def test_transformer_redacts_query_text_before_the_predictor_sees_it(tmp_path):
    from fusionrec.api.access import client_headers
    from fusionrec.config import load_settings
    from fusionrec.privacy import PiiFilter
    from serving.transformer import FusionTransformer

    settings = load_settings(env={"FUSIONREC__PATHS__ARTIFACTS": str(tmp_path)})
    model = FusionTransformer("fusionrec", settings, store=None, pii=PiiFilter())
    out = asyncio.run(
        model.preprocess(
            {"instances": [{"text": "like the one jane.doe@example.com sent me", "k": 3}]}, client_headers(settings)
        )
    )
    text = out["instances"][0]["text"]
    assert "jane.doe@example.com" not in text and "<EMAIL_ADDRESS>" in text
