"""Property tests over the OpenAPI schema (schemathesis, in-process ASGI): no request
generated from the schema — valid or not — gets a 5xx or reaches the 500 handler, and for the
scene and label routes every answer's status is one the schema documents for that route, with
a body that matches the documented schema.

The label event stream (``/labels/events``) never ends by itself, so it cannot be called
in-process; it is tested against a real server (tests/test_server_labels_live.py)."""

from __future__ import annotations

import json
import re
import tempfile
import zlib
from pathlib import Path

import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance, status_code_conformance

from server.config import Settings
from server.main import create_app
from tests.server_scene import TOKENS, car_track, write_scene

_TMP = tempfile.TemporaryDirectory(prefix="fathom-schema-")
write_scene(Path(_TMP.name))
APP = create_app(Settings(scenes_dir=Path(_TMP.name), tokens=json.dumps(TOKENS), warmup=False))
ADMIN = {"Authorization": "Bearer admin-token-1"}
# a few cases with a lower role or no token, so that 401 and 403 answers are checked too
CALLERS = [ADMIN] * 5 + [{"Authorization": "Bearer annotator-token-1"}, {"Authorization": "Bearer viewer-token-1"}, {}]
CONFORMING = re.compile(r"^/v1/(scenes(/\{scene_id\}(/labels.*|/ontology)?)?|admin/rescan)$")
# fuzzing only: the coverage phase enumerates every schema boundary (minutes, not seconds)
CONFIG = schemathesis.Config.from_dict({"phases": {"coverage": {"enabled": False}}})
schema = schemathesis.openapi.from_asgi("/openapi.json", APP, config=CONFIG).exclude(path_regex=r"/labels/events$")


@schema.parametrize()
@settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_server_errors_and_documented_answers(case):
    key = zlib.crc32(repr((case.path_parameters, case.query, case.body)).encode())
    # the known scene id for most cases, so generation reaches past the 404
    if "scene_id" in (case.path_parameters or {}) and key % 4:
        case.path_parameters["scene_id"] = "demo"
    if "camera" in (case.path_parameters or {}) and key % 2:
        case.path_parameters["camera"] = "CAM_FRONT"
    checks = [not_a_server_error]
    if CONFORMING.match(case.operation.path):
        checks += [status_code_conformance, response_schema_conformance]
    case.call_and_validate(headers=CALLERS[key % len(CALLERS)], checks=checks)
    assert APP.state.fathom.server_errors == 0


def test_the_conformance_checks_cover_the_label_and_scene_routes():
    paths = {op.path for op in (r.ok() for r in schema.get_all_operations())}
    checked = {p for p in paths if CONFORMING.match(p)}
    assert {"/v1/scenes/{scene_id}/labels", "/v1/scenes/{scene_id}/labels/history", "/v1/scenes/{scene_id}/ontology",
            "/v1/scenes/{scene_id}/labels/revert", "/v1/scenes/{scene_id}/labels/tracks/{track_id}/history",
            "/v1/scenes", "/v1/scenes/{scene_id}", "/v1/admin/rescan"} == checked


def test_a_valid_write_is_accepted_by_the_same_app():
    """The generated requests above are mostly refused; this checks the app does accept good ones."""
    from fastapi.testclient import TestClient

    with TestClient(APP) as c:
        assert c.delete("/v1/scenes/demo/ontology", headers=ADMIN).status_code == 204  # the fuzzing may have set one
        r = c.patch("/v1/scenes/demo/labels", headers={**ADMIN, "If-Match": "*"}, json={"upsert": [car_track()]})
        assert r.status_code == 200
