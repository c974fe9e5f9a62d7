"""The serving API's request and response shapes, and their wire forms on KServe's two protocols.

A request is a list of instances. An instance asks either for recommendations for a user
(``user_id``, ``history``, ``k``, ``exclude_seen``, ``candidates``) or for items like an example
(``text``, a base64 ``image`` and/or ``like``: a catalogue item id, ``k``), which a ``user_id`` or a
``history`` re-ranks by taste with weight ``blend``. Each answered item carries its score's terms
(``explanation``: one per modality, ``id``, ``bias``; they add up to ``score``) and the term that
drove it (``driver``). The same instance schema is taken by the transformer and
the predictor, over v1 (``{"instances": [...]}``) and, on the predictor, over v2 (the open inference
protocol: one tensor per field, a row per instance, lists padded with empty strings).
"""

from __future__ import annotations

import base64
import binascii
import io
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError

from fusionrec.config import ServingSettings
from fusionrec.errors import BadRequest, PayloadTooLarge
from fusionrec.monitoring.log import QUERY_MODALITIES
from fusionrec.recommender import Result, Row
from fusionrec.search import SPACES

LIST_FIELDS = ("history", "recent", "exclude", "candidates")


class Instance(BaseModel):
    """One request row, as a client writes it (strict types: ``"k": "5"`` is refused, not coerced)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    user_id: str | int | None = None
    history: list[str | int] | None = None  # item ids, oldest first: a cold user's history, or recent items
    # Item ids from the feature store's online history (the transformer fills it in): oldest first, ids
    # the model does not know (items added since it was trained) are skipped rather than refused.
    recent: list[str | int] | None = None
    k: int = 20
    # default: true for recommendations over the catalogue, false over a candidate list and for a query by example
    exclude_seen: bool | None = None
    exclude: list[str | int] | None = None  # item ids never to return
    candidates: list[str | int] | None = None  # score only these items
    text: str | None = None  # query by example
    image: str | None = None  # query by example: base64 of the image file's bytes
    like: str | int | None = None  # query by example: more like this catalogue item
    blend: float | int | None = None  # a query's re-rank: the weight of the user's taste, 0 to 1
    # a query's spaces: "both" (default: its own, and the other through the bridge), "text" or "image"
    space: str | None = None


def _message(e: ValidationError) -> str:
    parts = []
    for err in e.errors()[:5]:
        where = ".".join(str(p) for p in err["loc"]) or "instance"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


def image_pixels(data: bytes, limits: ServingSettings, where: str) -> int:
    """The pixels a query image will decode to, read from its header only (nothing is decoded here).

    Raises:
        BadRequest: not an image, or a format outside ``serving.image_formats``.
        PayloadTooLarge: more pixels than ``serving.max_image_pixels``.
    """
    import warnings

    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow's DecompressionBombWarning: the limit below is ours
            with Image.open(io.BytesIO(data), formats=limits.image_formats) as img:
                w, h = img.size
    except Exception:  # noqa: BLE001 - any decoder failure (incl. MemoryError, OverflowError) is the same 400
        raise BadRequest(f"{where}: image does not decode as {'/'.join(limits.image_formats)}") from None
    if w * h > limits.max_image_pixels:
        raise PayloadTooLarge(f"{where}: image of {w}x{h} pixels is over {limits.max_image_pixels:,} pixels")
    return w * h


def _check_id(value: Any, name: str, limits: ServingSettings, where: str) -> None:
    if value is not None and len(str(value)) > limits.max_id_chars:
        raise PayloadTooLarge(f"{where}: {name} is over {limits.max_id_chars} characters")


def parse_instance(obj: Any, limits: ServingSettings, where: str = "instance") -> Row:
    """Validate one instance against the schema and the limits.

    Raises:
        BadRequest: wrong shape or type, k out of range, a query mixed with user fields, bad base64, an
            image that is not one of the allowed formats.
        PayloadTooLarge: a text, an image (bytes or pixels), an id or a list over its limit.
    """
    if not isinstance(obj, dict):
        raise BadRequest(f"{where}: expected a JSON object, got {type(obj).__name__}")
    try:
        inst = Instance.model_validate(obj)
    except ValidationError as e:
        raise BadRequest(f"{where}: {_message(e)}") from None
    _check_id(inst.user_id, "user_id", limits, where)
    _check_id(inst.like, "like", limits, where)
    for name in LIST_FIELDS:
        for value in getattr(inst, name) or []:
            _check_id(value, f"an id in {name}", limits, where)
    if not 1 <= inst.k <= limits.max_k:
        raise BadRequest(f"{where}: k must be between 1 and {limits.max_k}, got {inst.k}")
    for name, limit in (
        ("history", limits.max_history),
        ("recent", limits.max_history),
        ("exclude", limits.max_history),
        ("candidates", limits.max_candidates),
    ):
        values = getattr(inst, name)
        if values is not None and len(values) > limit:
            raise PayloadTooLarge(f"{where}: {name} has {len(values)} items; at most {limit}")
    exclude = [str(i) for i in inst.exclude or []]
    if inst.blend is not None and not 0.0 <= inst.blend <= 1.0:
        raise BadRequest(f"{where}: blend must be between 0 and 1, got {inst.blend}")
    if inst.space is not None and inst.space not in SPACES:
        raise BadRequest(f"{where}: space must be one of {list(SPACES)}, got {inst.space[:32]!r}")
    if inst.text is not None or inst.image is not None or inst.like is not None:
        if inst.text is not None and not inst.text.strip() and inst.image is None and inst.like is None:
            raise BadRequest(f"{where}: text is empty")
        if inst.text is not None and len(inst.text) > limits.max_text_chars:
            raise PayloadTooLarge(f"{where}: text has {len(inst.text):,} characters; at most {limits.max_text_chars:,}")
        image = None
        if inst.image is not None:
            if len(inst.image) > limits.max_image_bytes * 4 // 3 + 4:
                raise PayloadTooLarge(f"{where}: image is over {limits.max_image_bytes:,} bytes")
            try:
                image = base64.b64decode(inst.image, validate=True)
            except (binascii.Error, ValueError):
                raise BadRequest(f"{where}: image is not valid base64") from None
            if not image:
                raise BadRequest(f"{where}: image is empty")
            image_pixels(image, limits, where)
        text = inst.text if inst.text is not None and inst.text.strip() else None
        return Row(
            "query",
            inst.k,
            user_id=None if inst.user_id is None else str(inst.user_id),
            history=[str(i) for i in inst.history or []],
            recent=[str(i) for i in inst.recent or []],
            exclude_seen=bool(inst.exclude_seen),
            exclude=exclude,
            text=text,
            image=image,
            like=None if inst.like is None else str(inst.like),
            blend=None if inst.blend is None else float(inst.blend),
            space=inst.space or "both",
            candidates=None if inst.candidates is None else [str(i) for i in inst.candidates],
        )
    if inst.space is not None:
        raise BadRequest(
            f"{where}: space says where a query by example (text/image/like) searches; this instance has no query"
        )
    if inst.blend is not None:
        raise BadRequest(
            f"{where}: blend weighs a query by example (text/image/like) against the user's taste; "
            "this instance has no query"
        )
    return Row(
        "recommend",
        inst.k,
        user_id=None if inst.user_id is None else str(inst.user_id),
        history=[str(i) for i in inst.history or []],
        recent=[str(i) for i in inst.recent or []],
        # the caller's own candidate list is scored as given unless it asks for seen items to go (which
        # tells which items the user has seen: fusionrec.api.access decides who may)
        exclude_seen=inst.exclude_seen if inst.exclude_seen is not None else inst.candidates is None,
        exclude=exclude,
        candidates=None if inst.candidates is None else [str(i) for i in inst.candidates],
    )


def parse_v1(payload: Any, limits: ServingSettings) -> list[Row]:
    """``{"instances": [...]}`` -> validated rows."""
    if not isinstance(payload, dict) or "instances" not in payload:
        raise BadRequest('expected a JSON object {"instances": [...]}')
    extra = sorted(set(payload) - {"instances", "parameters"})
    if extra:
        raise BadRequest(f"unknown top-level fields {extra}; expected 'instances'")
    instances = payload["instances"]
    if not isinstance(instances, list) or not instances:
        raise BadRequest("instances must be a non-empty list")
    if len(instances) > limits.max_batch:
        raise PayloadTooLarge(f"{len(instances)} instances; at most {limits.max_batch} per request")
    return _within_pixel_budget(
        [parse_instance(obj, limits, f"instances[{n}]") for n, obj in enumerate(instances)], limits
    )


def _within_pixel_budget(rows: list[Row], limits: ServingSettings) -> list[Row]:
    """Raises: PayloadTooLarge: the request's images together decode to more than ``max_request_pixels``."""
    images = [r.image for r in rows if r.image is not None]
    if len(images) > 1:
        total = sum(image_pixels(img, limits, "image") for img in images)
        if total > limits.max_request_pixels:
            raise PayloadTooLarge(
                f"the request's images add up to {total:,} pixels; at most {limits.max_request_pixels:,} per request"
            )
    return rows


def row_to_instance(row: Row) -> dict[str, Any]:
    """A row as the v1 instance that parses back into it."""
    out: dict[str, Any] = {"k": row.k, "exclude_seen": row.exclude_seen}
    if row.user_id is not None:
        out["user_id"] = row.user_id
    if row.history or row.kind == "recommend":
        out["history"] = row.history
    if row.recent:
        out["recent"] = row.recent
    if row.candidates is not None:
        out["candidates"] = row.candidates
    for name in ("text", "like", "blend"):
        if getattr(row, name) is not None:
            out[name] = getattr(row, name)
    if row.kind == "query" and row.space != "both":
        out["space"] = row.space
    if row.image is not None:
        out["image"] = base64.b64encode(row.image).decode("ascii")
    if row.exclude:
        out["exclude"] = row.exclude
    return out


def to_v1(rows: list[Row], monitor: bool = False) -> dict[str, Any]:
    """Rows as a v1 request; ``monitor`` asks the predictor for the vectors the inference log keeps."""
    out: dict[str, Any] = {"instances": [row_to_instance(r) for r in rows]}
    if monitor:
        out["parameters"] = {"monitor": True}
    return out


def _param(params: Any, key: str) -> Any:
    """A request or response parameter, whether KServe decoded it to a plain value or an InferParameter."""
    if not params or key not in params:
        return None
    v = params[key]
    if hasattr(v, "HasField"):  # a protobuf InferParameter
        return next((getattr(v, a) for a in ("bool_param", "string_param", "int64_param") if v.HasField(a)), None)
    return v


def wants_monitor(payload: Any) -> bool:
    """Whether a request (v1 dict or v2 ``InferRequest``) asks for the inference log's vectors."""
    params = payload.get("parameters") if isinstance(payload, dict) else getattr(payload, "parameters", None)
    v = _param(params, "monitor")
    return v is True or (isinstance(v, str) and v.lower() == "true")


# -- v2 (open inference protocol) --------------------------------------------------------------------

_V2_SCALARS = {
    "user_id": "BYTES",
    "k": "INT32",
    "exclude_seen": "BOOL",
    "has_candidates": "BOOL",
    "text": "BYTES",
    "image": "BYTES",
    "like": "BYTES",
    "blend": "FP32",
    "space": "BYTES",
}


def _padded(lists: list[list[str]]) -> np.ndarray:
    width = max((len(x) for x in lists), default=0)
    out = np.full((len(lists), width), "", dtype=object)
    for i, x in enumerate(lists):
        out[i, : len(x)] = x
    return out


def to_v2(rows: list[Row], model_name: str, monitor: bool = False):
    """Rows -> a KServe ``InferRequest`` (one tensor per field; lists padded with ""); ``monitor`` asks the
    predictor for the vectors the inference log keeps."""
    from kserve import InferInput, InferRequest

    tensors: dict[str, tuple[str, np.ndarray]] = {
        "user_id": ("BYTES", np.array([r.user_id or "" for r in rows], dtype=object)),
        "k": ("INT32", np.array([r.k for r in rows], dtype=np.int32)),
        "exclude_seen": ("BOOL", np.array([r.exclude_seen for r in rows], dtype=bool)),
    }
    for name in LIST_FIELDS:
        lists = [(getattr(r, name) or []) for r in rows]
        if any(lists):
            tensors[name] = ("BYTES", _padded(lists))
    if any(r.candidates is not None for r in rows):
        tensors["has_candidates"] = ("BOOL", np.array([r.candidates is not None for r in rows], dtype=bool))
    if any(r.text is not None for r in rows):
        tensors["text"] = ("BYTES", np.array([r.text or "" for r in rows], dtype=object))
    if any(r.image is not None for r in rows):
        tensors["image"] = (
            "BYTES",
            np.array([base64.b64encode(r.image).decode("ascii") if r.image else "" for r in rows], dtype=object),
        )
    if any(r.like is not None for r in rows):
        tensors["like"] = ("BYTES", np.array([r.like or "" for r in rows], dtype=object))
    if any(r.blend is not None for r in rows):  # NaN: the default blend
        tensors["blend"] = ("FP32", np.array([np.nan if r.blend is None else r.blend for r in rows], dtype=np.float32))
    if any(r.kind == "query" and r.space != "both" for r in rows):  # "": the default
        tensors["space"] = (
            "BYTES",
            np.array([r.space if r.kind == "query" and r.space != "both" else "" for r in rows], dtype=object),
        )
    inputs = []
    for name, (dtype, arr) in tensors.items():
        data = arr.flatten().tolist()
        inputs.append(InferInput(name, list(arr.shape), dtype, data))
    return InferRequest(model_name=model_name, infer_inputs=inputs, parameters={"monitor": True} if monitor else None)


def v2_metadata(terms: list[str], dim: int) -> tuple[list[dict], list[dict]]:
    """The predictor's v2 input and output tensors, for ``GET /v2/models/<name>`` (-1: any size)."""
    inputs = [
        {"name": "k", "datatype": "INT32", "shape": [-1]},
        {"name": "user_id", "datatype": "BYTES", "shape": [-1]},
        {"name": "exclude_seen", "datatype": "BOOL", "shape": [-1]},
        *({"name": n, "datatype": "BYTES", "shape": [-1, -1]} for n in LIST_FIELDS),
        {"name": "has_candidates", "datatype": "BOOL", "shape": [-1]},
        {"name": "text", "datatype": "BYTES", "shape": [-1]},
        {"name": "image", "datatype": "BYTES", "shape": [-1]},
        {"name": "like", "datatype": "BYTES", "shape": [-1]},
        {"name": "blend", "datatype": "FP32", "shape": [-1]},
        {"name": "space", "datatype": "BYTES", "shape": [-1]},
    ]
    outputs = [
        {"name": "item_id", "datatype": "BYTES", "shape": [-1, -1]},
        {"name": "title", "datatype": "BYTES", "shape": [-1, -1]},
        {"name": "image", "datatype": "BYTES", "shape": [-1, -1]},
        {"name": "score", "datatype": "FP32", "shape": [-1, -1]},
        {"name": "score_terms", "datatype": "FP32", "shape": [-1, -1, len(terms)]},
        {"name": "count", "datatype": "INT32", "shape": [-1]},
        {"name": "fallback", "datatype": "BOOL", "shape": [-1]},
        {"name": "cold", "datatype": "BOOL", "shape": [-1]},
        {"name": "embedding", "datatype": "FP32", "shape": [-1, dim]},
        # a query by example's: per item, the spaces that found it ("text,image"); per row, the spaces
        # reached through the bridge ("image<-text")
        {"name": "found_in", "datatype": "BYTES", "shape": [-1, -1]},
        {"name": "bridged", "datatype": "BYTES", "shape": [-1]},
        # with the request parameter monitor=true: the inference log's vectors (a row without one: zeros,
        # and false in the *_present tensor)
        {"name": "user_vector", "datatype": "FP32", "shape": [-1, dim]},
        {"name": "user_vector_present", "datatype": "BOOL", "shape": [-1]},
        *({"name": f"query_{m}", "datatype": "FP32", "shape": [-1, -1]} for m in QUERY_MODALITIES),
        *({"name": f"query_{m}_present", "datatype": "BOOL", "shape": [-1]} for m in QUERY_MODALITIES),
    ]
    return inputs, outputs


def _as_text(v: Any) -> str:
    try:
        return v.decode("utf-8") if isinstance(v, (bytes, bytearray)) else str(v)
    except UnicodeDecodeError:
        raise BadRequest("a BYTES tensor holds bytes that are not UTF-8 text") from None


def parse_v2(request, limits: ServingSettings) -> list[Row]:
    """A KServe ``InferRequest`` -> validated rows (the same checks as v1).

    Raises:
        BadRequest: unknown tensors, tensors whose shape or type does not fit, rows that fail the schema.
    """
    known = set(_V2_SCALARS) | set(LIST_FIELDS)
    arrays: dict[str, np.ndarray] = {}
    for inp in request.inputs:
        if inp.name not in known:
            raise BadRequest(f"unknown input tensor {str(inp.name)[:64]!r}; expected some of {sorted(known)}")
        want = _V2_SCALARS.get(inp.name, "BYTES")
        if inp.datatype != want and not (
            want == "INT32" and inp.datatype in ("INT8", "INT16", "INT64", "UINT8", "UINT16", "UINT32", "UINT64")
        ):
            raise BadRequest(f"input {inp.name!r}: datatype must be {want}, got {str(inp.datatype)[:16]}")
        try:
            arr = inp.as_numpy()
        except Exception:  # noqa: BLE001 - reshape/dtype errors inside KServe's decoder
            raise BadRequest(f"input {inp.name!r}: data does not fit its shape and datatype {want}") from None
        want_ndim = 2 if inp.name in LIST_FIELDS else 1
        if arr.ndim != want_ndim:
            raise BadRequest(f"input {inp.name!r}: expected {want_ndim} dimensions, got shape {list(arr.shape)}")
        arrays[inp.name] = arr
    if "k" not in arrays:
        raise BadRequest("input 'k' (INT32 [batch]) is required")
    n = len(arrays["k"])
    if n == 0:
        raise BadRequest("empty batch")
    if n > limits.max_batch:
        raise PayloadTooLarge(f"{n} rows; at most {limits.max_batch} per request")
    bad = [name for name, a in arrays.items() if len(a) != n]
    if bad:
        raise BadRequest(f"inputs {bad} do not have the batch size {n} of 'k'")
    if arrays["k"].dtype.kind not in "iu":
        raise BadRequest("input 'k' must be an integer tensor")
    rows = []
    for i in range(n):
        obj: dict[str, Any] = {"k": int(arrays["k"][i])}
        if "exclude_seen" in arrays:
            obj["exclude_seen"] = bool(arrays["exclude_seen"][i])
        for name in ("user_id", "text", "image", "like", "space"):
            if name in arrays and _as_text(arrays[name][i]):
                obj[name] = _as_text(arrays[name][i])
        if "blend" in arrays and np.isfinite(arrays["blend"][i]):
            obj["blend"] = float(arrays["blend"][i])
        for name in LIST_FIELDS:
            values = [_as_text(v) for v in arrays[name][i] if _as_text(v)] if name in arrays else []
            if values:
                obj[name] = values
        if "has_candidates" in arrays and bool(arrays["has_candidates"][i]):
            obj.setdefault("candidates", [])  # an empty candidate list, not none
        rows.append(parse_instance(obj, limits, f"row {i}"))
    return _within_pixel_budget(rows, limits)


# -- results -------------------------------------------------------------------------------------------
def _explanation(terms: list[str], values) -> dict[str, Any]:
    named = {t: round(float(v), 4) for t, v in zip(terms, values)}
    return {"explanation": named, "driver": max(named, key=named.get) if named else None}


def _monitor_part(r: Result) -> dict[str, Any]:
    return {
        "user_vector": None if r.user_vector is None else [float(x) for x in r.user_vector],
        "query": {m: [float(x) for x in v] for m, v in r.query.items() if m in QUERY_MODALITIES},
    }


def result_to_dict(r: Result, terms: list[str], version: str, monitor: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {
        "items": [
            {
                "item_id": r.item_ids[j],
                "title": r.titles[j],
                "image": r.images[j],
                "score": float(r.scores[j]),
                **_explanation(terms, r.terms[j]),
                **({"found_in": r.found[j]} if r.found is not None else {}),
            }
            for j in range(len(r.item_ids))
        ],
        "fallback": r.fallback,
        "cold": r.cold,
        "model_version": version,
    }
    if r.bridged:
        out["bridged"] = r.bridged
    if r.embedding is not None:
        out["embedding"] = [float(x) for x in r.embedding]
    if monitor:
        out["monitor"] = _monitor_part(r)
    return out


def _stacked(vectors: list[np.ndarray | None]) -> tuple[np.ndarray, np.ndarray] | None:
    """Vectors (some missing) as one [B, d] tensor with zeros where missing, and the presence flags."""
    present = np.array([v is not None for v in vectors])
    if not present.any():
        return None
    dim = len(next(v for v in vectors if v is not None))
    out = np.zeros((len(vectors), dim), dtype=np.float32)
    for i, v in enumerate(vectors):
        if v is not None:
            out[i] = v
    return out, present


def results_to_v2(results: list[Result], terms: list[str], version: str, model_name: str, monitor: bool = False):
    """Results -> a KServe ``InferResponse``; rows padded to the largest k ('count' says how many are real).
    ``score_terms`` [B, K, T] names its last axis in the ``terms`` parameter."""
    from kserve import InferOutput, InferResponse

    n, k, m = len(results), max(len(r.item_ids) for r in results), len(terms)
    ids = np.full((n, k), "", dtype=object)
    titles = np.full((n, k), "", dtype=object)
    images = np.full((n, k), "", dtype=object)
    scores = np.zeros((n, k), dtype=np.float32)
    parts = np.zeros((n, k, m), dtype=np.float32)
    for i, r in enumerate(results):
        c = len(r.item_ids)
        ids[i, :c], titles[i, :c], images[i, :c] = r.item_ids, r.titles, r.images
        scores[i, :c] = r.scores
        parts[i, :c] = r.terms
    tensors = [
        ("item_id", "BYTES", ids),
        ("title", "BYTES", titles),
        ("image", "BYTES", images),
        ("score", "FP32", scores),
        ("score_terms", "FP32", parts),
        ("count", "INT32", np.array([len(r.item_ids) for r in results], dtype=np.int32)),
        ("fallback", "BOOL", np.array([r.fallback for r in results])),
        ("cold", "BOOL", np.array([r.cold for r in results])),
    ]
    if all(r.embedding is not None for r in results):
        tensors.append(("embedding", "FP32", np.stack([r.embedding for r in results]).astype(np.float32)))
    if any(r.found is not None for r in results):
        found = np.full((n, k), "", dtype=object)
        for i, r in enumerate(results):
            found[i, : len(r.found or [])] = [",".join(f) for f in r.found or []]
        bridged = [",".join(f"{t}<-{s}" for t, s in sorted(r.bridged.items())) for r in results]
        tensors += [("found_in", "BYTES", found), ("bridged", "BYTES", np.array(bridged, dtype=object))]
    if monitor:
        for name, vectors in [
            ("user_vector", [r.user_vector for r in results]),
            *((f"query_{m}", [r.query.get(m) for r in results]) for m in QUERY_MODALITIES),
        ]:
            got = _stacked(vectors)
            if got is not None:
                tensors += [(name, "FP32", got[0]), (f"{name}_present", "BOOL", got[1])]
    outputs = [InferOutput(name, list(arr.shape), dtype, arr.flatten().tolist()) for name, dtype, arr in tensors]
    return InferResponse(
        response_id="",
        model_name=model_name,
        infer_outputs=outputs,
        model_version=version,
        parameters={"terms": ",".join(terms), "model_version": version},
    )


def results_from_v2(response) -> list[dict[str, Any]]:
    """A KServe ``InferResponse`` from the predictor -> the v1 result dicts."""
    out = {o.name: o.as_numpy() for o in response.outputs}
    params = response.parameters or {}
    terms = [m for m in _as_text(_param(params, "terms")).split(",") if m]
    version = _as_text(_param(params, "model_version"))
    rows = []
    for i, count in enumerate(out["count"].reshape(-1)):
        items = [
            {
                "item_id": _as_text(out["item_id"][i, j]),
                "title": _as_text(out["title"][i, j]),
                "image": _as_text(out["image"][i, j]),
                "score": float(out["score"][i, j]),
                **_explanation(terms, out["score_terms"][i, j]),
                **(
                    {"found_in": [f for f in _as_text(out["found_in"][i, j]).split(",") if f]}
                    if "found_in" in out
                    else {}
                ),
            }
            for j in range(int(count))
        ]
        row = {
            "items": items,
            "fallback": bool(out["fallback"][i]),
            "cold": bool(out["cold"][i]),
            "model_version": version,
        }
        bridged = _as_text(out["bridged"][i]) if "bridged" in out else ""
        if bridged:
            row["bridged"] = dict(pair.split("<-", 1) for pair in bridged.split(",") if "<-" in pair)
        if "embedding" in out:
            row["embedding"] = [float(x) for x in out["embedding"][i]]
        if "user_vector_present" in out or any(f"query_{m}_present" in out for m in QUERY_MODALITIES):
            row["monitor"] = {
                "user_vector": (
                    [float(x) for x in out["user_vector"][i]]
                    if "user_vector" in out and out["user_vector_present"][i]
                    else None
                ),
                "query": {
                    m: [float(x) for x in out[f"query_{m}"][i]]
                    for m in QUERY_MODALITIES
                    if f"query_{m}" in out and out[f"query_{m}_present"][i]
                },
            }
        rows.append(row)
    return rows
