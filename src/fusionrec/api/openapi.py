"""The serving API as OpenAPI 3.0 documents: the routes the two model servers answer
(:data:`fusionrec.api.http.ROUTES`) with the request schema they take, and the sink's event route.

The servers do not publish these (their ``/docs`` and ``/openapi.json`` are closed): they are what a
client generator or a fuzzer reads (``tests/integration/test_serving.py`` fuzzes both servers and the
sink from them with schemathesis), built from the same pydantic models that validate requests.
"""

from __future__ import annotations

import copy
from typing import Any


def _inline(schema: dict[str, Any]) -> dict[str, Any]:
    """A pydantic JSON schema with its ``$defs`` inlined (OpenAPI 3.0 has no ``$defs``; none of ours recurse)."""
    defs = schema.pop("$defs", {})

    def walk(node):
        if isinstance(node, dict):
            if "$ref" in node and node["$ref"].startswith("#/$defs/"):
                return walk(copy.deepcopy(defs[node["$ref"].split("/")[-1]]))
            return {k: walk(v) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    out = walk(schema)

    # JSON Schema's anyOf with {"type": "null"} is OpenAPI 3.0's nullable
    def nullable(node):
        if isinstance(node, dict):
            node = {k: nullable(v) for k, v in node.items()}
            options = node.get("anyOf")
            if options and {"type": "null"} in options:
                rest = [o for o in options if o != {"type": "null"}]
                node.pop("anyOf")
                node.update(rest[0] if len(rest) == 1 else {"anyOf": rest})
                node["nullable"] = True
            return node
        if isinstance(node, list):
            return [nullable(v) for v in node]
        return node

    return nullable(out)


def _json_body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


ANSWERS = {
    "200": {"description": "the answer"},
    "4XX": {"description": "the request was refused: {\"error\": ...}"},
    "503": {"description": "not ready, or overloaded: retry after Retry-After"},
}
MODEL = {"name": "model_name", "in": "path", "required": True, "schema": {"type": "string"}}


def serving_openapi(model_name: str = "fusionrec", *, v2: bool = True) -> dict[str, Any]:
    """The model servers' API (``v2``: with the open inference protocol's infer route, which the predictor
    answers and the transformer refuses with a 400 naming v1)."""
    from kserve.protocol.rest.v2_datamodels import InferenceRequest

    from fusionrec.api.schemas import Instance

    instance = _inline(Instance.model_json_schema())
    v1 = {
        "type": "object",
        "required": ["instances"],
        "additionalProperties": False,
        "properties": {"instances": {"type": "array", "items": instance}, "parameters": {"type": "object"}},
    }
    get = {"get": {"responses": ANSWERS}}
    with_model = {"get": {"parameters": [MODEL], "responses": ANSWERS}}
    paths: dict[str, Any] = {
        "/": get,
        "/metrics": get,
        "/v1/models": get,
        "/v2": get,
        "/v2/health/live": get,
        "/v2/health/ready": get,
        "/v2/models": get,
        "/v1/models/{model_name}": with_model,
        "/v2/models/{model_name}": with_model,
        "/v2/models/{model_name}/ready": with_model,
        "/v1/models/{model_name}:predict": {
            "post": {"parameters": [MODEL], "requestBody": _json_body(v1), "responses": ANSWERS}
        },
    }
    if v2:
        paths["/v2/models/{model_name}/infer"] = {
            "post": {
                "parameters": [MODEL],
                "requestBody": _json_body(_inline(InferenceRequest.model_json_schema())),
                "responses": ANSWERS,
            }
        }
    return {"openapi": "3.0.3", "info": {"title": f"fusionrec serving ({model_name})", "version": "1"}, "paths": paths}


def sink_openapi() -> dict[str, Any]:
    """The inference-log sink's API: KServe's request logger posts CloudEvents in binary mode."""
    headers = [
        {"name": "ce-id", "in": "header", "required": True, "schema": {"type": "string"}},
        {
            "name": "ce-type",
            "in": "header",
            "required": True,
            "schema": {
                "type": "string",
                "enum": ["org.kubeflow.serving.inference.request", "org.kubeflow.serving.inference.response"],
            },
        },
        {"name": "ce-time", "in": "header", "required": False, "schema": {"type": "string"}},
    ]
    body = _json_body(
        {
            "type": "object",
            "properties": {
                "instances": {"type": "array"},
                "predictions": {"type": "array"},
                "inputs": {"type": "array"},
                "outputs": {"type": "array"},
            },
        }
    )
    event = {
        "post": {
            "parameters": headers,
            "requestBody": body,
            "responses": {"202": {"description": "taken"}, "4XX": {"description": "refused"}},
        }
    }
    return {
        "openapi": "3.0.3",
        "info": {"title": "fusionrec inference-log sink", "version": "1"},
        "paths": {
            "/events": event,
            "/": event,
            "/healthz": {"get": {"responses": ANSWERS}},
            "/metrics": {"get": {"responses": ANSWERS}},
        },
    }
