"""Text that is not UTF-8 in a request (a JSON lone surrogate such as "\\ud800") is a 400 naming the field on
every route, the applications' included, never a 500 from the tokenizer or from encoding the response; so is
NUL ("\\u0000"), which PostgreSQL cannot store."""

import json

import httpx
import pytest
from fastapi import APIRouter

from genforge.config import not_utf8
from genforge.serve.errors import error_body
from genforge.serve.text import bad_json_text

LONE = "\\ud800"  # as spelled in the JSON text of a request

REQUESTS = [
    ("/v1/completions", f'{{"model": "tiny", "prompt": "{LONE}"}}', "prompt"),
    ("/v1/completions", f'{{"model": "tiny", "prompt": ["fine", "a{LONE}b"]}}', "prompt.1"),
    ("/v1/completions", f'{{"model": "{LONE}", "prompt": "x"}}', "model"),
    ("/v1/completions", f'{{"model": "tiny", "prompt": "x", "stop": ["{LONE}"]}}', "stop.0"),
    ("/v1/chat/completions", f'{{"model": "tiny", "messages": [{{"role": "user", "content": "{LONE}"}}]}}',
     "messages.0.content"),
    ("/v1/chat/completions", f'{{"model": "tiny", "stream": true, "messages": [{{"role": "user", '
                             f'"content": "{LONE}"}}]}}', "messages.0.content"),
    ("/v1/chat/completions", f'{{"model": "tiny", "messages": [{{"role": "user", "content": [{{"type": "text", '
                             f'"text": "{LONE}"}}]}}]}}', "messages.0.content.0.text"),
    ("/v1/embeddings", f'{{"model": "tiny", "input": "{LONE}"}}', "input"),
    ("/v1/classify", f'{{"model": "cls", "input": ["ok", "{LONE}"]}}', "input.1"),
    ("/v1/feedback", f'{{"response_id": "x", "comment": "{LONE}"}}', "comment"),
    ("/v1/completions", f'{{"model": "tiny", "prompt": "x", "{LONE}": 1}}', LONE),
]


def test_not_utf8_names_the_byte_or_the_surrogate():
    assert not_utf8("plain é 🙂") is None
    assert not_utf8("caf\udce9") == "byte 0xe9"  # how Python keeps a non-UTF-8 byte of argv or stdin
    assert not_utf8("a\ud800") == "lone surrogate \\ud800"


def test_bad_json_text_finds_the_field_and_leaves_the_rest_to_fastapi():
    assert bad_json_text(b'{"prompt": "\\ud83d\\ude00 is a pair"}') is None
    assert bad_json_text(b'{"prompt": "\\\\ud800 is an escaped backslash"}') is None
    assert bad_json_text(b'{"prompt": "\\ud800", broken') is None
    assert bad_json_text(b'"\\udfff"') == ("body", "lone surrogate \\udfff")
    assert bad_json_text(b'{"a": [{"b": 1}, {"c": ["x", "\\uDC80"]}]}') == ("a.1.c.1", "byte 0x80")
    deep = b"[" * 100_000 + b'"\\ud800"' + b"]" * 100_000  # deeper than json.loads goes: FastAPI's own 400
    assert bad_json_text(deep) is None


def test_error_bodies_that_echo_the_request_always_encode():
    body = error_body(404, "no item '\ud800x'", param="items.\ud800")
    assert json.dumps(body, ensure_ascii=False).encode("utf-8")
    assert body["error"]["message"] == "no item '\\ud800x'" and body["error"]["param"] == "items.\\ud800"


def refused(server, path: str, body: str, param: str) -> dict:
    """The error of a body the gateway refuses with a 400 naming `param`."""
    url, _ = server
    r = httpx.post(url + path, content=body, headers={"content-type": "application/json"}, timeout=60)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error"
    return error


@pytest.mark.parametrize(("path", "body", "param"), REQUESTS)
def test_lone_surrogates_are_a_400_naming_the_field(server, path, body, param):
    assert refused(server, path, body, param)["message"].startswith(f"{param} is not valid Unicode text (")


def test_surrogate_pairs_are_ordinary_text(server):
    url, _ = server
    r = httpx.post(f"{url}/v1/completions", content='{"model": "tiny", "prompt": "\\ud83d\\ude00", "max_tokens": 2}',
                   headers={"content-type": "application/json"}, timeout=60)
    assert r.status_code == 200, r.text


def test_moderation_model_never_sees_them(serve_cfg, classifier_dir, live):
    with live(serve_cfg(moderation_model=classifier_dir, moderation_labels=["negative"])) as (url, _):
        r = httpx.post(f"{url}/v1/chat/completions", timeout=60, headers={"content-type": "application/json"},
                       content=f'{{"model": "tiny", "messages": [{{"role": "user", "content": "{LONE}"}}]}}')
        assert r.status_code == 400 and r.json()["error"]["param"] == "messages.0.content", r.text


def test_application_routes_are_covered(tmp_path, live):
    """The applications (support, recommend, monitor) add routers to create_app's app: the gateway refuses
    the text before their handlers, which echo ids in errors or tokenize."""
    from genforge.serve.app import ServerState, create_app
    from genforge.serve.config import ServeConfig
    from genforge.serve.db import connect
    from genforge.serve.keys import Keys

    seen = []
    app_routes = APIRouter()

    @app_routes.post("/v1/app/echo")
    def echo(body: dict) -> dict:
        seen.append(body)
        return body

    state = ServerState(cfg=ServeConfig(model=tmp_path, name="app"), models={},
                        keys=Keys(connect(f"sqlite:///{tmp_path / 'serve.db'}"), None))
    with live(create_app(state, routers=(app_routes,))) as (url, _):
        r = httpx.post(f"{url}/v1/app/echo", content=f'{{"items": ["{LONE}"]}}', timeout=60,
                       headers={"content-type": "application/json"})
        assert r.status_code == 400 and r.json()["error"]["param"] == "items.0", r.text
        assert httpx.post(f"{url}/v1/app/echo", json={"items": ["ok"]}, timeout=60).json() == {"items": ["ok"]}
    assert seen == [{"items": ["ok"]}]


NUL_REQUESTS = [
    ("/v1/chat/completions", '{"model": "tiny", "messages": [{"role": "user", "content": "a\\u0000b"}]}',
     "messages.0.content"),
    ("/v1/completions", '{"model": "tiny", "prompt": "x", "user": "\\u0000"}', "user"),
    ("/v1/feedback", '{"response_id": "x", "comment": "ok\\u0000"}', "comment"),
]


def test_bad_json_text_finds_nul_but_not_an_escaped_backslash():
    assert bad_json_text(b'{"a": ["x", "\\u0000"]}') == ("a.1", "a NUL character (U+0000)")
    assert bad_json_text(b'{"a": "\\\\u0000 is text"}') is None


@pytest.mark.parametrize(("path", "body", "param"), NUL_REQUESTS)
def test_nul_is_a_400_naming_the_field(server, path, body, param):
    assert refused(server, path, body, param)["message"] == (f"{param} holds a NUL character (U+0000), which the "
                                                             "database cannot store; remove it")
