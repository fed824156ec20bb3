"""``fathom token create|list|revoke``, digest and expiring tokens in ``server.auth``, ``serve
--tokens-file`` and the demo's token."""

from __future__ import annotations

import hashlib
import json
import re
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from server.auth import Principal, TokensError, authenticate, load_tokens, parse_tokens
from server.cli import build_parser, main
from server.config import Settings
from server.main import create_app
from server.tokens import create_token, list_tokens, parse_expires, revoke_token
from tests.server_scene import write_scene

NOW = datetime(2030, 5, 17, 12, 0, 0, tzinfo=UTC)


def _create(capsys, path: Path, *args: str) -> str:
    """``fathom token create ...``; the token printed alone on stdout."""
    assert main(["token", "create", "--tokens-file", str(path), *args]) == 0
    out = capsys.readouterr().out.strip()
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", out)  # token_urlsafe(32): 32 bytes, 43 base64url characters
    return out


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _client(tmp_path: Path, tokens_file: Path) -> TestClient:
    return TestClient(create_app(Settings(scenes_dir=tmp_path / "scenes", tokens_file=tokens_file, warmup=False)))


@pytest.fixture()
def scenes(tmp_path):
    write_scene(tmp_path / "scenes")


# ---------------------------------------------------------------- the file


def test_create_list_revoke_keeps_only_digests(tmp_path, capsys):
    path = tmp_path / "t.json"
    alice = _create(capsys, path, "--role", "viewer", "--name", "alice", "--expires", "30d")
    admin = _create(capsys, path, "--role", "admin")
    data = path.read_bytes()
    assert alice.encode() not in data and admin.encode() not in data
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.json"]  # no temporary file left behind
    entries = json.loads(data)["tokens"]
    admin_sha = hashlib.sha256(admin.encode()).hexdigest()
    assert [(e["sha256"], e["name"], e["role"]) for e in entries] == [
        (hashlib.sha256(alice.encode()).hexdigest(), "alice", "viewer"), (admin_sha, f"admin-{admin_sha[:8]}", "admin")]
    created = datetime.fromisoformat(entries[0]["created"])
    assert datetime.fromisoformat(entries[0]["expires"]) - created == timedelta(days=30)
    assert entries[1]["expires"] is None

    assert main(["token", "list", "--tokens-file", str(path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["ID", "NAME", "ROLE", "CREATED", "EXPIRES", "STORED"]
    assert lines[2].split() == [admin_sha[:8], f"admin-{admin_sha[:8]}", "admin", entries[1]["created"], "never",
                                "sha256"]

    assert main(["token", "revoke", "--tokens-file", str(path), "alice"]) == 0
    assert "revoked viewer token 'alice'" in capsys.readouterr().err
    assert main(["token", "revoke", "--tokens-file", str(path), admin_sha[:8]]) == 0
    assert json.loads(path.read_text()) == {"tokens": []}
    assert main(["token", "revoke", "--tokens-file", str(path), "alice"]) == 2
    assert f"{path}: no token named or with id 'alice'" in capsys.readouterr().err


def test_default_file_is_the_servers_env_variable_else_the_working_directory(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FATHOM_TOKENS_FILE", raising=False)
    assert main(["token", "create", "--role", "viewer"]) == 0
    monkeypatch.setenv("FATHOM_TOKENS_FILE", str(tmp_path / "env.json"))
    assert main(["token", "create", "--role", "admin"]) == 0
    assert [i.role for i in list_tokens(tmp_path / "fathom-tokens.json")] == ["viewer"]
    assert [i.role for i in list_tokens(tmp_path / "env.json")] == ["admin"]


def test_duplicate_names_and_replace(tmp_path, capsys):
    path = tmp_path / "t.json"
    _create(capsys, path, "--role", "viewer", "--name", "bob")
    assert main(["token", "create", "--tokens-file", str(path), "--role", "admin", "--name", "bob"]) == 2
    assert "a token named 'bob' exists already" in capsys.readouterr().err
    token, info = create_token(path, "admin", "bob", replace=True)
    assert [(i.name, i.role, i.sha256) for i in list_tokens(path)] == [
        ("bob", "admin", hashlib.sha256(token.encode()).hexdigest())]


def test_hand_written_plain_entries_survive_and_ambiguous_revokes_are_refused(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text("tokens:\n  - {token: plain-token-one, role: viewer, name: ops}\n"
                    "  - {token: plain-token-two, role: admin, name: ops}\n")
    with pytest.raises(TokensError, match=r"2 tokens match 'ops'"):
        revoke_token(path, "ops")
    two = hashlib.sha256(b"plain-token-two").hexdigest()
    assert revoke_token(path, two[:8]).role == "admin"
    assert [(i.name, i.plain) for i in list_tokens(path)] == [("ops", True)]
    assert load_tokens(path, None) == {hashlib.sha256(b"plain-token-one").digest(): Principal("ops", "viewer")}


@pytest.mark.parametrize("content, message", [
    ('{"tokens": [', r"not valid JSON"),
    ('{"tokens": [{"sha256": "abc", "role": "admin"}]}', r"entry 0: 'sha256' must be 64 lowercase hex"),
    ('{"tokens": [{"sha256": "' + "0" * 64 + '", "role": "root"}]}', r"entry 0: role must be one of"),
    ('[{"token": "plain-token-1", "role": "viewer"}, {"sha256": "' + "0" * 64 + '", "role": "viewer", '
     '"expires": "next week"}]', r"entry 1: 'expires' must be an ISO 8601"),
    ('[{"token": "plain-token-1", "sha256": "' + "0" * 64 + '", "role": "viewer"}]', r"entry 0: needs exactly one"),
    ('"admin"', r"tokens must be a mapping or a list"),
])
def test_corrupt_files_are_named_with_their_entry(tmp_path, capsys, content, message):
    path = tmp_path / "t.json"
    path.write_text(content)
    for argv in (["list"], ["create", "--role", "admin"], ["revoke", "x"]):
        assert main(["token", *argv, "--tokens-file", str(path)]) == 2
        err = capsys.readouterr().err
        assert str(path) in err and re.search(message, err), err
    assert path.read_text() == content  # an error never rewrites the file
    with pytest.raises(TokensError, match=re.escape(str(path)) + ".*" + message):
        create_app(Settings(scenes_dir=tmp_path, tokens_file=path, warmup=False))


def test_bad_role_name_and_expiry_are_refused(tmp_path, capsys):
    path = tmp_path / "t.json"
    with pytest.raises(SystemExit) as exit_:
        main(["token", "create", "--tokens-file", str(path), "--role", "root"])
    assert exit_.value.code == 2 and "invalid choice: 'root'" in capsys.readouterr().err
    with pytest.raises(TokensError, match="role must be one of"):
        create_token(path, "root")
    with pytest.raises(TokensError, match="token name 'two words'"):
        create_token(path, "viewer", "two words")
    assert main(["token", "create", "--tokens-file", str(path), "--role", "viewer", "--expires", "soon"]) == 2
    assert "--expires 'soon': expected a duration" in capsys.readouterr().err
    assert not path.exists()


def test_parse_expires():
    assert parse_expires("90m", NOW) == NOW + timedelta(minutes=90)
    assert parse_expires("2w", NOW) == NOW + timedelta(days=14)
    assert parse_expires("2031-01-31", NOW) == datetime(2031, 1, 31, tzinfo=UTC)
    assert parse_expires("2031-01-31T18:00:00+01:00", NOW) == datetime(2031, 1, 31, 17, tzinfo=UTC)
    for past in ("2030-05-17T12:00:00Z", "0s"):
        with pytest.raises(TokensError, match="not in the future"):
            parse_expires(past, NOW)
    for bad in ("", "3 days", "-1d", "1y", "31/01/2031"):
        with pytest.raises(TokensError, match="expected a duration"):
            parse_expires(bad, NOW)


# ---------------------------------------------------------------- authentication


def test_created_tokens_authenticate_with_their_role(tmp_path, scenes, capsys):
    path = tmp_path / "t.json"
    viewer = _create(capsys, path, "--role", "viewer")
    ann = _create(capsys, path, "--role", "annotator", "--name", "ann")
    admin = _create(capsys, path, "--role", "admin")
    with _client(tmp_path, path) as c:
        assert c.get("/v1/scenes", headers=_bearer(viewer)).status_code == 200
        rev = c.get("/v1/scenes/demo/labels", headers=_bearer(viewer)).json()["revision"]
        for token, status in ((viewer, 403), (ann, 200)):
            r = c.put("/v1/scenes/demo/labels", headers={"If-Match": f'"r{rev}"'} | _bearer(token), json={"tracks": []})
            assert r.status_code == status
        assert c.post("/v1/admin/rescan", headers=_bearer(ann)).status_code == 403
        assert c.post("/v1/admin/rescan", headers=_bearer(admin)).status_code == 200
        history = c.get("/v1/scenes/demo/labels/history", headers=_bearer(admin)).json()
        assert history[-1]["author"] == "ann"
        assert c.get("/v1/scenes", headers=_bearer(viewer[:-1])).status_code == 401

    assert main(["token", "revoke", "--tokens-file", str(path), "ann"]) == 0
    with _client(tmp_path, path) as c:
        assert c.get("/v1/scenes", headers=_bearer(ann)).status_code == 401
        assert c.get("/v1/scenes", headers=_bearer(viewer)).status_code == 200


def test_expired_token_gets_401(tmp_path, scenes):
    path = tmp_path / "t.json"
    then = datetime(2020, 1, 1, tzinfo=UTC)
    expired, _ = create_token(path, "admin", "old", then + timedelta(days=1), now=then)
    lasting, _ = create_token(path, "admin", "new", datetime(9999, 1, 1, tzinfo=UTC))
    with _client(tmp_path, path) as c:
        r = c.get("/v1/scenes", headers=_bearer(expired))
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        assert c.get("/v1/scenes", headers=_bearer(lasting)).status_code == 200


def test_expiry_is_checked_against_the_given_clock():
    expires = "2030-05-17T12:00:00Z"
    table = parse_tokens([{"sha256": hashlib.sha256(b"some-long-token").hexdigest(), "role": "annotator",
                           "name": "eve", "expires": expires}], "test")
    principal = Principal("eve", "annotator", datetime(2030, 5, 17, 12, tzinfo=UTC))
    assert authenticate(table, "Bearer some-long-token", NOW - timedelta(microseconds=1)) == principal
    assert authenticate(table, "Bearer some-long-token", NOW) is None
    assert authenticate(table, "Bearer some-long-token", NOW + timedelta(days=1)) is None


def test_fathom_tokens_env_takes_plain_and_digest_entries(tmp_path, scenes):
    env = json.dumps([{"token": "plain-viewer-1", "role": "viewer"},
                      {"sha256": hashlib.sha256(b"digest-admin-1").hexdigest(), "role": "admin", "name": "root"}])
    plain = hashlib.sha256(b"plain-viewer-1")
    assert load_tokens(None, json.dumps({"plain-viewer-1": "viewer"})) == {
        plain.digest(): Principal(f"viewer-{plain.hexdigest()[:8]}", "viewer")}
    with TestClient(create_app(Settings(scenes_dir=tmp_path / "scenes", tokens=env, warmup=False))) as c:
        assert c.get("/v1/scenes", headers=_bearer("plain-viewer-1")).status_code == 200
        assert c.post("/v1/admin/rescan", headers=_bearer("plain-viewer-1")).status_code == 403
        assert c.post("/v1/admin/rescan", headers=_bearer("digest-admin-1")).status_code == 200
        assert c.get("/v1/scenes", headers=_bearer(hashlib.sha256(b"digest-admin-1").hexdigest())).status_code == 401
    with pytest.raises(TokensError, match="FATHOM_TOKENS: not valid JSON"):
        load_tokens(None, "{viewer")


# ---------------------------------------------------------------- serve and demo


def test_serve_passes_the_tokens_file_only_when_given(monkeypatch):
    calls = []
    monkeypatch.setattr("server.main.serve", lambda *a, **kw: calls.append((a, kw)))
    args = build_parser().parse_args(["serve", "scenes", "--tokens-file", "t.json"])
    assert args.tokens_file == Path("t.json")
    assert main(["serve", "scenes", "--tokens-file", "t.json", "--port", "9000"]) == 0
    assert main(["serve", "scenes"]) == 0  # Settings then reads FATHOM_TOKENS_FILE itself
    assert calls == [(("scenes",), {"host": "127.0.0.1", "port": 9000, "tokens_file": Path("t.json")}),
                     (("scenes",), {"host": "127.0.0.1", "port": 8000})]


def test_demo_prints_a_fresh_admin_token_each_run(tmp_path, monkeypatch, capsys):
    args = ["demo", "--workdir", str(tmp_path), "--duration", "0.2"]
    assert main([*args, "--no-serve"]) == 0
    first = capsys.readouterr().out
    calls = []
    monkeypatch.setattr("server.main.serve", lambda *a, **kw: calls.append((a, kw)))
    assert main(args) == 0
    second = capsys.readouterr().out
    tokens = [re.search(r"admin token \(name 'demo', in .*\): (\S+)", out)[1] for out in (first, second)]
    assert f"http://127.0.0.1:8000/viewer/road-0?token={tokens[0]}" in first
    assert f"--tokens-file {tmp_path / 'tokens.json'}" in first
    assert calls == [((tmp_path / "scenes",),
                      {"host": "127.0.0.1", "port": 8000, "tokens_file": tmp_path / "tokens.json"})]
    assert [(i.name, i.role, i.sha256) for i in list_tokens(tmp_path / "tokens.json")] == [
        ("demo", "admin", hashlib.sha256(tokens[1].encode()).hexdigest())]
    with TestClient(create_app(Settings(scenes_dir=tmp_path / "scenes", tokens_file=tmp_path / "tokens.json",
                                        warmup=False))) as c:
        assert c.get("/v1/scenes/road-0", headers=_bearer(tokens[1])).status_code == 200
        assert c.get("/v1/scenes/road-0", headers=_bearer(tokens[0])).status_code == 401
