"""The gateway's direct routes (service/direct.py) and the plain body readers: the same answers as FastAPI's handler
and the strict schema, for good and bad requests alike."""

import io
import json

import numpy as np
import orjson
import pytest
from fastapi import APIRouter, Depends, Request
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from service.codec import numbers
from service.direct import DirectRoutes, direct
from service.errors import ServiceError
from service.main import create_app
from service.routes.predict import plain_arrays, schema_arrays
from service.settings import Settings

DIGIT = np.zeros((28, 28), np.uint8)
DIGIT[4:24, 13:15] = 255
V2 = "/v2/models/mnist-0to4/infer"
TENSOR = {"name": "image", "shape": [1, 1, 28, 28], "datatype": "UINT8"}


def png() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(255 - DIGIT).save(buffer, "PNG")
    return buffer.getvalue()


# (method, path, body, headers): good requests and every kind of refusal the two paths must agree on.
REQUESTS = {
    "v1 array": ("POST", "/v1/predict", json.dumps({"image": DIGIT.tolist()}), {}),
    "v1 array 0-1": ("POST", "/v1/predict", json.dumps({"image": (DIGIT / 255).tolist()}), {}),
    "v1 batch": ("POST", "/v1/predict/batch", json.dumps({"images": [DIGIT.tolist()] * 3}), {}),
    "v1 PNG": ("POST", "/v1/predict", png(), {"content-type": "image/png"}),
    "v1 booleans": ("POST", "/v1/predict", json.dumps({"image": [[True] * 28] * 28}), {}),
    "v1 strings": ("POST", "/v1/predict", json.dumps({"image": [["1"] * 28] * 28}), {}),
    "v1 27 rows": ("POST", "/v1/predict", json.dumps({"image": DIGIT[:27].tolist()}), {}),
    "v1 above 255": ("POST", "/v1/predict", json.dumps({"image": (DIGIT.astype(int) + 1).tolist()}), {}),
    "v1 extra key": ("POST", "/v1/predict", json.dumps({"image": DIGIT.tolist(), "x": 1}), {}),
    "v1 not JSON": ("POST", "/v1/predict", "{", {}),
    "v1 no type": ("POST", "/v1/predict", "{}", {"content-type": ""}),
    "v1 empty batch": ("POST", "/v1/predict/batch", json.dumps({"images": []}), {}),
    "v2 JSON": ("POST", V2, json.dumps({"inputs": [{**TENSOR, "data": DIGIT.ravel().tolist()}]}), {}),
    "v2 version": ("POST", "/v2/models/mnist-0to4/versions/nope/infer",
                   json.dumps({"inputs": [{**TENSOR, "data": DIGIT.ravel().tolist()}]}), {}),
    "v2 unknown model": ("POST", "/v2/models/other/infer", "{}", {}),
    "v2 booleans": ("POST", V2, json.dumps({"inputs": [{**TENSOR, "data": [True] * 784}]}), {}),
    "v2 short": ("POST", V2, json.dumps({"inputs": [{**TENSOR, "data": [0] * 783}]}), {}),
    "v2 GET": ("GET", V2, "", {}),
    "v2 trailing slash": ("POST", V2 + "/", "{}", {}),
}


def answers(settings: Settings, direct: bool) -> dict[str, tuple]:
    with TestClient(create_app(settings, direct), raise_server_exceptions=False) as client:
        out = {}
        for name, (method, path, body, headers) in REQUESTS.items():
            response = client.request(method, path, content=body,
                                      headers={"content-type": "application/json", **headers})
            out[name] = (response.status_code, response.content, response.headers.get("www-authenticate"))
        return out


@pytest.fixture(scope="module")
def calls():
    """The direct calls made while a module-scoped app serves (a spy on DirectRoutes.__call__)."""
    made = []
    patch = pytest.MonkeyPatch()
    original = DirectRoutes.__call__

    async def spy(self, entry, params, scope, receive, send):
        made.append(entry.route.path)
        await original(self, entry, params, scope, receive, send)

    patch.setattr(DirectRoutes, "__call__", spy)
    yield made
    patch.undo()


@pytest.mark.parametrize("api_key", [None, "s3cret"])
def test_direct_routes_answer_as_fastapi_does(shipped_model_dir, calls, api_key):
    both = {on: answers(Settings(model_dir=shipped_model_dir, api_key=api_key), on)
            for on in (True, False)}
    assert both[True] == both[False]
    statuses = {name: status for name, (status, _, _) in both[True].items()}
    if api_key:  # every inference route is guarded on both paths; a method FastAPI refuses stays 405
        assert {s for n, s in statuses.items() if n not in ("v2 GET", "v2 trailing slash")} == {401}
    else:
        assert [n for n, s in statuses.items() if s == 200] == ["v1 array", "v1 array 0-1", "v1 batch", "v1 PNG",
                                                                "v2 JSON"]
        assert statuses["v2 unknown model"] == statuses["v2 version"] == 404
        assert statuses["v1 booleans"] == statuses["v1 strings"] == statuses["v1 27 rows"] == 422
    # The direct path was taken (and only for the routes it matches).
    assert "/v1/predict" in calls and "/v2/models/{name}/infer" in calls
    assert "/v2/models/{name}/versions/{version}/infer" in calls


def test_the_table_holds_the_marked_routes_and_matches_as_the_router(shipped_model_dir):
    from service.routes import predict, v2

    table = DirectRoutes([(predict.router, []), (v2.models, []), (v2.health, [])])
    assert [entry.route.path for entry in table.routes] == [
        "/v1/predict", "/v1/predict/batch", "/v2/models/{name}/infer", "/v2/models/{name}/versions/{version}/infer"]
    found = table.match({"type": "http", "method": "POST", "path": "/v2/models/m/versions/7/infer"})
    assert found[0].route.path.endswith("{version}/infer") and found[1] == {"name": "m", "version": "7"}
    for method, path in [("GET", "/v1/predict"), ("POST", "/v1/predict/"), ("POST", "/v2/models/m"),
                         ("POST", "/v2/models/a/b/infer"), ("GET", "/v2/health/ready")]:
        assert table.match({"type": "http", "method": method, "path": path}) is None


def test_a_route_fastapi_would_have_to_solve_is_refused():
    router = APIRouter()

    @router.post("/x/{name}")
    @direct
    async def takes_a_query(request: Request, name: str, limit: int = 3):
        return None

    with pytest.raises(TypeError, match="direct endpoint"):
        DirectRoutes([(router, [])])

    plain = APIRouter()

    @plain.post("/y")
    @direct
    async def fine(request: Request):
        return None

    async def needs_more(request: Request, other: str):
        return None

    with pytest.raises(TypeError, match="dependency"):
        DirectRoutes([(plain, [Depends(needs_more)])])


@pytest.mark.parametrize("on", [True, False])
def test_an_unexpected_error_is_a_500_logged_with_its_traceback(shipped_model_dir, monkeypatch, capsys, on):
    from service.routes import predict

    async def broken(request, many):
        raise RuntimeError("boom")

    monkeypatch.setattr(predict, "_answer", broken)
    with TestClient(create_app(Settings(model_dir=shipped_model_dir), on),
                    raise_server_exceptions=False) as client:
        response = client.post("/v1/predict", json={"image": DIGIT.tolist()})
    assert response.status_code == 500 and response.json() == {"error": "internal error"}
    logged = [json.loads(line) for line in capsys.readouterr().err.splitlines() if "unhandled" in line]
    assert [entry["message"] for entry in logged] == ["unhandled error on POST /v1/predict"]
    assert "RuntimeError: boom" in logged[0]["exception"]


# The plain readers against the strict ones they stand in for.

odd_values = st.one_of(st.booleans(), st.none(), st.text(max_size=2), st.integers(-(2**70), 2**70),
                       st.floats(-1e3, 1e3), st.just(255.5), st.just(-0.0), st.lists(st.integers(0, 3), max_size=2))


@st.composite
def v1_bodies(draw):
    """28x28 grids (bytes, 0-1, floats, ints and floats), half of them with a few odd values, a short or a missing
    row, once or several times, under the right key or another."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    grid = {"bytes": lambda: rng.integers(0, 256, (28, 28)).tolist(),
            "unit": lambda: rng.random((28, 28)).tolist(),
            "floats": lambda: (rng.random((28, 28)) * 255).tolist(),
            "mixed": lambda: [[int(v) if v < 100 else v for v in row] for row in (rng.random((28, 28)) * 255)],
            }[draw(st.sampled_from(["bytes", "unit", "floats", "mixed"]))]()
    for _ in range(draw(st.sampled_from([0, 0, 0, 1, 3]))):
        grid[draw(st.integers(0, 27))][draw(st.integers(0, 27))] = draw(odd_values)
    cut = draw(st.sampled_from([None] * 6 + ["row", "cell"]))
    if cut == "row":
        grid.pop()
    elif cut == "cell":
        grid[draw(st.integers(0, 27))].pop()
    many = draw(st.booleans())
    key = draw(st.sampled_from(["images", "images", "image"] if many else ["image", "image", "images"]))
    value = [grid] * draw(st.sampled_from([1, 1, 2, 0])) if many else grid
    return json.dumps({key: value}).encode(), many


@settings(max_examples=200, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(case=v1_bodies())
def test_plain_arrays_reads_what_the_schema_reads_and_nothing_else(case):
    body, many = case
    plain = plain_arrays(body, many, 28)
    try:
        strict = schema_arrays(body, many, 28)
    except ServiceError:
        assert plain is None
        return
    if plain is not None:
        assert len(plain) == len(strict) and all(np.array_equal(a, b) for a, b in zip(plain, strict, strict=True))
        assert all(a.dtype == np.float32 for a in plain)


def test_plain_arrays_reads_ordinary_bodies_as_the_schema_and_leaves_the_rest_to_it():
    """The fast path is taken for the bodies clients send (else it would save nothing, and the agreement above
    would hold for want of cases), and gives what the schema gives; a body with anything odd in it is not."""
    rng = np.random.default_rng(0)
    grids = [rng.integers(0, 256, (28, 28)).tolist(), rng.random((28, 28)).tolist(),
             (rng.random((28, 28)) * 255).tolist(), DIGIT.tolist()]
    for grid in grids:
        bodies = [(orjson.dumps({"image": grid}), False), (json.dumps({"images": [grid] * 2}, indent=1).encode(), True)]
        for body, many in bodies:
            plain = plain_arrays(body, many, 28)
            assert plain is not None
            assert all(np.array_equal(a, b) for a, b in zip(plain, schema_arrays(body, many, 28), strict=True))
    odd = [{"image": [[True] * 28] * 28}, {"image": DIGIT.tolist(), "x": 1}, {"images": []},
           {"image": DIGIT[:27].tolist()}, {"image": (DIGIT.astype(int) + 1).tolist()},
           {"image": [[0.5] * 28] * 27 + [["0.5"] * 28]}]
    for payload in odd:
        assert plain_arrays(json.dumps(payload).encode(), "images" in payload, 28) is None


json_values = st.recursive(st.one_of(st.integers(-(2**70), 2**70), st.floats(allow_nan=False), st.none(),
                                     st.text(max_size=2)),
                           lambda inner: st.lists(inner, max_size=5), max_leaves=30)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(values=st.one_of(json_values, st.lists(st.lists(st.integers(0, 255), min_size=3, max_size=3), max_size=4)))
def test_numbers_without_booleans_agrees_with_the_look_at_every_type(values):
    checked, quick = numbers(values), numbers(values, booleans=False)
    assert (checked is None) == (quick is None)
    if checked is not None:
        assert quick.dtype == checked.dtype and np.array_equal(quick, checked)


@pytest.mark.parametrize("on", [True, False])
def test_a_client_gone_before_its_body_is_a_499_on_both_paths(shipped_model_dir, on):
    """The server tells the app the client has gone (``http.disconnect``) instead of its body: the request ends as
    a 499, without an error escaping to the server, on the direct path and on FastAPI's alike."""
    app = create_app(Settings(model_dir=shipped_model_dir), on)
    sent = []

    async def gone():
        return {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": "/v1/predict", "raw_path": b"/v1/predict", "root_path": "", "query_string": b"",
             "headers": [(b"host", b"x"), (b"content-type", b"application/json"), (b"content-length", b"100")],
             "client": ("127.0.0.1", 40000), "server": ("127.0.0.1", 8000), "state": {}}
    with TestClient(app) as client:  # (its lifespan loads the model)
        client.portal.call(app, scope, gone, send)
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 499
