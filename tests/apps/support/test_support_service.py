"""The built assistant end to end without HTTP: folder contents, thresholds, answers, sessions, tickets, safety."""

import json
import math

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from genforge.apps.support.assistant import Answer, citations, load_assistant
from genforge.apps.support.index import Hit
from genforge.apps.support.ingest import Passage
from genforge.apps.support.policy import Thresholds
from genforge.apps.support.service import Desk, reply
from genforge.apps.support.tables import NoSuchSession, SupportTurn, close_ticket, list_tickets, open_session
from genforge.artifacts import read_manifest
from genforge.serve.db import Audit, StoredResponse, connect
from genforge.serve.safety import Safety


@pytest.fixture(scope="module")
def assistant(assistant_dir):
    return load_assistant(assistant_dir)


@pytest.fixture
def desk(assistant, tmp_path):
    return Desk(assistant, connect(f"sqlite:///{tmp_path / 'serve.db'}"), Safety(["scam"], redact_pii=True))


def test_build_writes_index_classifier_chat_model_and_calibrated_thresholds(assistant_dir, assistant):
    manifest = read_manifest(assistant_dir, stage="app.support.build")
    assert manifest["metrics"]["faq_entries"] == 4 and manifest["metrics"]["doc_chunks"] >= 3
    assert read_manifest(assistant_dir / "intent")["stage"] and read_manifest(assistant_dir / "chat")["stage"]
    assert assistant.classifier[2]["labels"].count("oos") == 1
    calibration = json.loads((assistant_dir / "calibration.json").read_text())
    assert calibration["val_inscope"] == 4 and calibration["val_oos"] == 4
    assert calibration["inscope_accuracy"] >= calibration["target_inscope_accuracy"]
    th = assistant.thresholds
    assert th == Thresholds.from_dict(calibration["thresholds"]) and not math.isinf(th.handoff_confidence)


def test_faq_answers_are_verbatim_with_their_source(assistant):
    assistant = load_assistant(assistant.folder, generate=False)
    assistant.thresholds = Thresholds(handoff_confidence=0.3, faq=0.5)
    answer = assistant.answer([{"role": "user", "content": "How long does delivery take?"}])
    assert answer.action == "faq" and answer.text == "Standard delivery takes 3 to 5 business days."
    assert answer.sources[0]["entry"] == "shipping" and answer.sources[0]["source"].startswith("faq.csv:")
    zh = assistant.answer([{"role": "user", "content": "如何申请退款？"}])
    assert zh.action == "faq" and zh.entry == "refund_zh"


def test_a_confident_intent_classifier_picks_the_entry_retrieval_did_not(assistant):
    assistant = load_assistant(assistant.folder, generate=False)
    question = "How long does delivery take?"
    intents = assistant.intents([question], assistant.index.encoder([question]))  # any entry: 2 steps
    assistant.thresholds = Thresholds(handoff_confidence=-1.0, faq=-1.0, intent=0.0)  # always the classifier's
    routed = assistant.answer([{"role": "user", "content": question}])
    assert routed.entry == intents.entry[0] and routed.sources[0]["entry"] == intents.entry[0]
    assistant.thresholds = Thresholds(handoff_confidence=-1.0, faq=-1.0, intent=float(intents.prob[0]) + 1e-6)
    assert assistant.answer([{"role": "user", "content": question}]).entry == "shipping"  # retrieval's


def test_generated_answers_cite_the_passages_in_the_prompt(assistant):
    assistant.thresholds = Thresholds(handoff_confidence=0.0, faq=math.inf)  # always generate
    answer = assistant.answer([{"role": "user", "content": "How long does delivery take?"}], max_new_tokens=8)
    assert answer.action == "generate" and len(answer.sources) == assistant.meta["prompt_passages"]
    assert answer.text.endswith("; ".join(f"[{s['n']}] {s['source']}" for s in answer.sources))


def test_follow_ups_are_retrieved_with_the_previous_question(assistant):
    assistant.thresholds = Thresholds(handoff_confidence=0.45, faq=0.5)
    conversation = [{"role": "user", "content": "I forgot my password"},
                    {"role": "assistant", "content": "Click 'Forgot password'."},
                    {"role": "user", "content": "and then what?"}]
    query, hits, _, _ = assistant.retrieve(conversation)
    assert query == "I forgot my password and then what?" and hits[0].passage.entry == "password"
    query, _, _, _ = assistant.retrieve([*conversation[:2], {"role": "user", "content": "When will my package arrive?"}])
    assert query == "When will my package arrive?"  # a full new question stands alone
    query, _, _, _ = assistant.retrieve([*conversation[:2], {"role": "user", "content": "what is the weather on Mars"}])
    assert query == "what is the weather on Mars"  # so does an off-topic one, to be handed off


def test_a_follow_up_the_out_of_scope_score_would_hand_off_is_retrieved_with_the_previous_question(assistant):
    """Calibration often leaves the hand-off to the out-of-scope score (a hand-off confidence near 0): a follow-up
    used to be merged only when its retrieval confidence was low, so "and then what?" was handed off."""
    follow_up = "and then what?"
    alone = float(assistant.intents([follow_up], assistant.index.encoder([follow_up])).oos[0])
    assistant.thresholds = Thresholds(handoff_confidence=-1.0, oos=alone, faq=0.5)  # flagged by its oos score only
    conversation = [{"role": "user", "content": "I forgot my password"},
                    {"role": "assistant", "content": "Click 'Forgot password'."},
                    {"role": "user", "content": follow_up}]
    query, _, _, intents = assistant.retrieve(conversation)
    assert query == "I forgot my password and then what?" and intents is not None
    assistant.thresholds = Thresholds(handoff_confidence=-1.0, oos=alone + 1.0, faq=0.5)  # answerable alone
    assert assistant.retrieve(conversation)[0] == follow_up


def test_sessions_keep_history_and_hand_offs_open_tickets(desk):
    desk.assistant.thresholds = Thresholds(handoff_confidence=0.45, faq=0.5)
    first = reply(desk, "I forgot my password")
    second = reply(desk, "and then what?", session_id=first.session_id)
    assert second.answer.query.startswith("I forgot my password")
    desk.assistant.thresholds = Thresholds(handoff_confidence=0.99, faq=1.0)  # nothing is close enough
    gone = reply(desk, "what is the weather on Mars", session_id=first.session_id)
    assert gone.answer.action == "handoff" and f"#{gone.answer.ticket}" in gone.answer.text
    [ticket] = list_tickets(desk.engine)
    assert ticket["id"] == gone.answer.ticket and ticket["question"] == "what is the weather on Mars"
    assert [m["content"] for m in ticket["transcript"]][0] == "I forgot my password"
    assert "low retrieval confidence" in ticket["reason"]
    assert close_ticket(desk.engine, ticket["id"]) and not close_ticket(desk.engine, ticket["id"])
    assert list_tickets(desk.engine) == [] and len(list_tickets(desk.engine, "closed")) == 1
    with Session(desk.engine) as s:
        turns = list(s.scalars(select(SupportTurn).where(SupportTurn.session_id == first.session_id)))
        stored = s.get(StoredResponse, gone.response_id)
    assert [t.role for t in turns] == ["user", "assistant"] * 3
    assert turns[-1].action == "handoff" and turns[-1].response_id == gone.response_id
    assert stored.model == "support" and json.loads(stored.response) == [gone.answer.text]


def test_answers_are_redacted_and_inputs_moderated(desk):
    desk.assistant.thresholds = Thresholds(handoff_confidence=0.3, faq=0.5)
    answer = reply(desk, "How do I get a refund?")
    assert answer.answer.action == "faq" and "billing@example.com" not in answer.answer.text
    assert "<EMAIL>" in answer.answer.text
    blocked = reply(desk, "is this a scam?")
    assert blocked.answer.action == "blocked" and blocked.answer.text == desk.safety.refusal
    with Session(desk.engine) as s:
        audit = list(s.scalars(select(Audit).order_by(Audit.id)))
    assert ("output", "redact") in [(a.stage, a.action) for a in audit]
    assert ("input", "block") in [(a.stage, a.action) for a in audit]


class Quoting:
    """An assistant that answers every question with one document chunk verbatim (cited), and keeps the
    dialogues it was given."""

    def __init__(self, chunk: str):
        self.chunk, self.seen = chunk, []

    def stream(self, conversation, max_new_tokens=160):
        self.seen.append([m["content"] for m in conversation])
        passage = Passage(0, "doc", "billing.md#0", self.chunk, self.chunk, "billing.md#0")
        answer = Answer("faq", self.chunk, 0.9, sources=citations([Hit(passage, 0.03, 0.9, 1.0)]))
        yield answer.text
        return answer


def test_a_session_is_its_first_callers_alone(tmp_path):
    desk = Desk(Quoting("We will look into it."), connect(f"sqlite:///{tmp_path / 'serve.db'}"))
    reply(desk, "I am alice@example.com, charged twice", session_id="s-42", caller="alice")
    with pytest.raises(NoSuchSession, match="no such session: 's-42'"):
        reply(desk, "hello", session_id="s-42", caller="bob")  # bob must not see alice's turns
    assert len(desk.assistant.seen) == 1
    reply(desk, "any news?", session_id="s-42", caller="alice")
    assert desk.assistant.seen[-1][0] == "I am alice@example.com, charged twice"  # the owner goes on


def test_first_requests_racing_on_a_new_session_id_all_get_it(tmp_path):
    """Concurrent first requests with one client-chosen id: one creates the row, the others read it (the
    losing insert used to raise IntegrityError: an HTTP 500)."""
    import threading

    engine, errors = connect(f"sqlite:///{tmp_path / 'serve.db'}"), []
    for k in range(10):
        barrier = threading.Barrier(6)

        def first_request(sid=f"new-{k}", barrier=barrier):
            barrier.wait()
            try:
                assert open_session(engine, sid, "alice") == sid
            except Exception as e:  # noqa: BLE001 - any failure is the finding
                errors.append(repr(e))

        threads = [threading.Thread(target=first_request) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert errors == []


def test_citations_are_redacted_like_the_answer_and_a_blocked_answer_cites_nothing(tmp_path):
    engine = connect(f"sqlite:///{tmp_path / 'serve.db'}")
    chunk = "Billing questions: write to jane.doe@example.com or call +1 415 555 0134."
    answer = reply(Desk(Quoting(chunk), engine), "how do I contact billing?").answer
    assert answer.text == "Billing questions: write to <EMAIL> or call <PHONE>."
    assert [c["text"] for c in answer.sources] == [answer.text]
    with Session(engine) as s:
        stored = s.scalars(select(SupportTurn.sources).where(SupportTurn.role == "assistant")).one()
    assert json.loads(stored)[0]["text"] == answer.text
    blocked = reply(Desk(Quoting(chunk), engine, Safety(["billing"])), "how do I contact billing?").answer
    assert blocked.action == "blocked" and blocked.sources == []


def test_sessions_and_tickets_on_postgresql(postgres_url):
    from types import SimpleNamespace

    from genforge.apps.support.tables import add_turns, history, open_session, open_ticket

    engine = connect(postgres_url)  # runs every migration branch, support's included
    sid = open_session(engine, None, "pg")
    add_turns(engine, sid, "你好", SimpleNamespace(text="您好！", action="faq", confidence=0.9, sources=[]), None)
    assert history(engine, sid) == [{"role": "user", "content": "你好"}, {"role": "assistant", "content": "您好！"}]
    ticket = open_ticket(engine, sid, "?", "out of scope", history(engine, sid))
    assert [t["id"] for t in list_tickets(engine)] == [ticket] and close_ticket(engine, ticket)
