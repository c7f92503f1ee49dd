"""The assistant on the serving stack over real HTTP: /v1/support/chat (JSON and SSE), the OpenAI model
name through the official client, tickets, feedback, keys and bad requests."""

import json

import httpx
import pytest

from genforge.apps.support.config import SupportServeConfig
from genforge.apps.support.server import serve_config
from genforge.errors import ArtifactError

SHIPPING = "Standard delivery takes 3 to 5 business days."


def _events(text: str) -> list:
    lines = [line[6:] for line in text.split("\n\n") if line.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    return [json.loads(x) for x in lines[:-1]]


def test_support_chat_json_stream_sessions_tickets_and_feedback(support_app, live):
    app, _ = support_app()
    with live(app) as (url, _), httpx.Client(base_url=url, timeout=60) as http:
        r = http.post("/v1/support/chat", json={"message": "How long does delivery take?"})
        assert r.status_code == 200, r.text
        first = r.json()
        assert first["action"] == "faq" and first["answer"] == SHIPPING and first["sources"][0]["entry"] == "shipping"
        r = http.post("/v1/support/chat", json={"message": "what is the weather on Mars", "stream": True,
                                                "session_id": first["session_id"]})
        assert r.headers["content-type"].startswith("text/event-stream")
        events = _events(r.text)
        final = events[-1]
        assert final["action"] == "handoff" and final["session_id"] == first["session_id"]
        assert "".join(e["delta"] for e in events[:-1]) == final["answer"]
        tickets = http.get("/v1/support/tickets").json()["data"]
        assert [t["id"] for t in tickets] == [final["ticket"]]
        assert [m["content"] for m in tickets[0]["transcript"]] == ["How long does delivery take?", SHIPPING,
                                                                    "what is the weather on Mars"]
        r = http.post("/v1/feedback", json={"response_id": first["response_id"], "thumbs": "up"})
        assert r.status_code == 200 and r.json()["response_id"] == first["response_id"]
        assert http.post("/v1/support/chat", json={"message": ""}).status_code == 400
        as_text = http.post("/v1/support/chat", json={"message": "hi", "stream": "true"})  # not read as true
        assert as_text.status_code == 400 and as_text.json()["error"]["param"] == "stream"
        blank = http.post("/v1/support/chat", json={"message": " \n "})
        assert blank.status_code == 400 and "message is empty" in blank.json()["error"]["message"]
        blank = http.post("/v1/chat/completions", json={"model": "support", "messages": [{"role": "user",
                                                                                          "content": " "}]})
        assert blank.status_code == 400 and "message is empty" in blank.json()["error"]["message"]
        assert [t["id"] for t in http.get("/v1/support/tickets").json()["data"]] == [final["ticket"]]  # none opened
        assert http.get("/v1/support/tickets", params={"status": "maybe"}).status_code == 400
        assert "Ticket #" in http.get("/support").text and http.get("/support/config").json()["name"] == "support"


def test_openai_clients_talk_to_the_assistant_and_other_models_pass_through(support_app, live, oai):
    app, _ = support_app()
    with live(app) as (url, _):
        client = oai(url)
        assert [m.id for m in client.models.list()] == ["support", "support-chat"]
        done = client.chat.completions.create(model="support", messages=[
            {"role": "user", "content": "I forgot my password"}, {"role": "assistant", "content": "Click it."},
            {"role": "user", "content": "How long does delivery take?"}])
        assert done.choices[0].message.content == SHIPPING and done.id.startswith("chatcmpl-")
        pieces = [c.choices[0].delta.content or "" for c in client.chat.completions.create(
            model="support", messages=[{"role": "user", "content": "How long does delivery take?"}], stream=True)
            if c.choices]
        assert "".join(pieces) == SHIPPING
        raw = client.chat.completions.create(model="support-chat", messages=[{"role": "user", "content": "hi"}],
                                             max_tokens=3)
        assert raw.model == "support-chat" and raw.usage.completion_tokens <= 3  # the served chat model itself


def test_keys_protect_the_support_routes(support_app, live):
    app, _ = support_app(api_key="secret")
    with live(app) as (url, _), httpx.Client(base_url=url, timeout=60) as http:
        assert http.post("/v1/support/chat", json={"message": "hi"}).status_code == 401
        ok = http.post("/v1/support/chat", json={"message": "How long does delivery take?"},
                       headers={"Authorization": "Bearer secret"})
        assert ok.status_code == 200 and http.get("/support/config").json()["key_required"] is True


def test_another_key_cannot_read_or_join_a_session(support_app, live):
    from genforge.serve.keys import create_key

    app, state = support_app()
    alice, bob = ({"Authorization": f"Bearer {create_key(state.keys.engine, name)[1]}"} for name in ("alice", "bob"))
    with live(app) as (url, _), httpx.Client(base_url=url, timeout=60) as http:
        mine = {"message": "I forgot my password", "session_id": "s-42"}
        assert http.post("/v1/support/chat", json=mine, headers=alice).status_code == 200
        for stream in (False, True):  # refused before a stream starts
            r = http.post("/v1/support/chat", json={**mine, "stream": stream}, headers=bob)
            assert r.status_code == 404 and r.json()["error"]["message"] == "no such session: 's-42'"
        r = http.post("/v1/chat/completions", headers=bob, json={
            "model": "support", "user": "s-42", "messages": [{"role": "user", "content": "and then what?"}]})
        assert r.status_code == 404 and r.json()["error"]["param"] == "user"
        assert http.post("/v1/support/chat", json=mine, headers=alice).status_code == 200


def test_serving_a_folder_that_is_not_an_assistant_is_a_clear_error(tmp_path):
    with pytest.raises(ArtifactError, match="not a support assistant"):
        serve_config(SupportServeConfig(assistant=tmp_path))


def test_a_dead_decoding_worker_ends_the_support_server_with_an_error(served_dir, tmp_path, blocking, monkeypatch):
    from genforge.apps.support.server import serve
    from genforge.serve.batch import SlotBatch

    def broken(self, waiting):
        raise RuntimeError("boom")

    monkeypatch.setattr(SlotBatch, "admissible", broken)  # a bug in the served chat model's worker thread
    url, thread, raised = blocking(serve, lambda port: SupportServeConfig(
        assistant=served_dir, db=f"sqlite:///{tmp_path / 'serve.db'}", port=port, max_new_tokens=8))
    r = httpx.post(f"{url}/v1/chat/completions", timeout=30, json={
        "model": "support-chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2})
    assert r.status_code == 500
    thread.join(30)
    assert not thread.is_alive() and "the decoding worker of model 'support-chat' failed" in str(raised[0])
