"""Property tests over the OpenAPI schema (schemathesis, in-process ASGI): no request
generated from the schema — valid or not — gets a 5xx or reaches the 500 handler."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import schemathesis
from hypothesis import HealthCheck, settings

from server.config import Settings
from server.main import create_app
from tests.server_scene import TOKENS, car_track, write_scene

_TMP = tempfile.TemporaryDirectory(prefix="fathom-schema-")
write_scene(Path(_TMP.name))
APP = create_app(Settings(scenes_dir=Path(_TMP.name), tokens=json.dumps(TOKENS), warmup=False))
ADMIN = {"Authorization": "Bearer admin-token-1"}
# fuzzing only: the coverage phase enumerates every schema boundary (minutes, not seconds)
CONFIG = schemathesis.Config.from_dict({"phases": {"coverage": {"enabled": False}}})
schema = schemathesis.openapi.from_asgi("/openapi.json", APP, config=CONFIG)


@schema.parametrize()
@settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_server_errors(case):
    # the known scene id for most cases, so generation reaches past the 404
    if "scene_id" in (case.path_parameters or {}) and hash(str(case.path_parameters)) % 4:
        case.path_parameters["scene_id"] = "demo"
    if "camera" in (case.path_parameters or {}) and hash(str(case.path_parameters)) % 2:
        case.path_parameters["camera"] = "CAM_FRONT"
    response = case.call(headers=ADMIN)
    assert response.status_code < 500, (case.method, case.formatted_path, response.text[:500])
    assert APP.state.fathom.server_errors == 0


def test_a_valid_write_is_accepted_by_the_same_app():
    """The generated requests above are mostly refused; this checks the app does accept good ones."""
    from fastapi.testclient import TestClient

    with TestClient(APP) as c:
        r = c.patch("/v1/scenes/demo/labels", headers={**ADMIN, "If-Match": "*"}, json={"upsert": [car_track()]})
        assert r.status_code == 200
