"""A support stream whose client leaves, mid-answer or before the answer started, still stores its turn, before
the response has ended."""

import asyncio
import json

from sqlalchemy import select
from sqlalchemy.orm import Session

from genforge.apps.support.tables import SupportTurn, list_tickets
from genforge.serve.db import StoredResponse


def first_piece(message: dict) -> bool:
    return message["type"] == "http.response.body" and bool(message.get("body"))


def response_start(message: dict) -> bool:
    return message["type"] == "http.response.start"


def drop_while_sending(app, path: str, body: dict, stalls_on=first_piece) -> None:
    """POST `body` to `path` as a stream to a client that stalls on the first message `stalls_on` picks (the
    answer's first chunk, or the response's start: nothing read) and then disconnects, as uvicorn 0.49 (ASGI
    2.3) reports it. The app's response (and its body generator) is still referenced when this returns, so only
    the route's own closing can have stored the turn by then."""
    raw = json.dumps(body).encode()
    scope = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
             "method": "POST", "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
             "root_path": "", "headers": [(b"content-type", b"application/json"),
                                          (b"content-length", str(len(raw)).encode())],
             "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 8000)}

    async def main() -> None:
        gone = asyncio.Event()
        asked = False

        async def send(message: dict) -> None:
            if stalls_on(message):
                gone.set()
                await asyncio.Event().wait()  # the client stalls: this send never returns

        async def receive() -> dict:
            nonlocal asked
            if not asked:
                asked = True
                return {"type": "http.request", "body": raw, "more_body": False}
            await gone.wait()
            return {"type": "http.disconnect"}

        await app(scope, receive, send)

    asyncio.run(main())


def test_a_dropped_support_stream_stores_its_turn_and_hand_off(support_app):
    """The routes returned a StreamingResponse over a sync generator: a dropped stream's generator was closed
    (if ever) when collected, and a closed converse() stored nothing, so the hand-off's ticket was left without
    its turn or its stored response."""
    app, state = support_app()
    question = "what is the weather on Mars"  # the served thresholds hand it off
    drop_while_sending(app, "/v1/support/chat", {"message": question, "stream": True})
    [ticket] = list_tickets(state.keys.engine)
    with Session(state.keys.engine) as s:
        turns = list(s.scalars(select(SupportTurn).where(SupportTurn.session_id == ticket["session"])))
        [stored] = s.scalars(select(StoredResponse)).all()
    assert [(t.role, t.content) for t in turns][0] == ("user", question)
    assert turns[1].action == "handoff" and f"#{ticket['id']}" in turns[1].content
    assert stored.status == 499 and stored.finish == "cancelled" and stored.id == turns[1].response_id
    assert json.loads(stored.response) == [turns[1].content]


def test_a_dropped_openai_stream_stores_what_the_client_was_sent(support_app):
    """Dropped before the assistant's answer was complete, the turn is stored as cancelled with the text sent."""
    app, state = support_app()
    question = "How long does delivery take?"  # a FAQ answer: one piece, then the end of the turn
    drop_while_sending(app, "/v1/chat/completions", {"model": "support", "stream": True, "user": "dropped",
                                                     "messages": [{"role": "user", "content": question}]})
    with Session(state.keys.engine) as s:
        turns = list(s.scalars(select(SupportTurn)))
        [stored] = s.scalars(select(StoredResponse)).all()
    assert [(t.role, t.action) for t in turns] == [("user", None), ("assistant", "cancelled")]
    sent = turns[1].content  # the output guard holds the answer's last words back until the answer ends
    assert sent and "Standard delivery takes 3 to 5 business days.".startswith(sent)
    assert stored.status == 499 and stored.user == "dropped" and json.loads(stored.response) == [sent]
    assert list_tickets(state.keys.engine) == []


def test_a_stream_dropped_before_its_first_piece_stores_the_message_without_answering(support_app):
    """A client gone before the first piece was asked for: the body's generators had not started, so closing them
    ran none of their code and the customer's message was lost. It is stored as a cancelled turn with nothing
    sent, and no answer is made for no one (the question would be handed off: no ticket is opened)."""
    app, state = support_app()
    question = "what is the weather on Mars"
    drop_while_sending(app, "/v1/support/chat", {"message": question, "stream": True}, stalls_on=response_start)
    with Session(state.keys.engine) as s:
        turns = list(s.scalars(select(SupportTurn)))
        [stored] = s.scalars(select(StoredResponse)).all()
    assert [(t.role, t.content, t.action) for t in turns] == [("user", question, None), ("assistant", "", "cancelled")]
    assert stored.status == 499 and stored.finish == "cancelled" and stored.id == turns[1].response_id
    assert json.loads(stored.response) == [""] and stored.ttft is None
    assert list_tickets(state.keys.engine, "all") == []
