"""The embeddable support widget in headless Chromium: a streamed FAQ answer with its source, thumbs feeding
the feedback table, and a hand-off with its ticket in the same session."""

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait
from sqlalchemy import select
from sqlalchemy.orm import Session

from genforge.apps.support.tables import Ticket
from genforge.serve.db import Feedback

pytestmark = pytest.mark.browser


def test_widget_answers_takes_thumbs_and_hands_off(support_app, live, browser):
    app, state = support_app()
    with live(app) as (url, _):
        wait = WebDriverWait(browser, 60)
        browser.get(f"{url}/support")

        def ask(text: str, n: int):
            browser.find_element(By.ID, "input").send_keys(text)
            browser.find_element(By.ID, "send").click()
            return wait.until(lambda d: (len(d.find_elements(By.CSS_SELECTOR, ".assistant .tools")) == n and
                                         d.find_elements(By.CSS_SELECTOR, ".assistant")[-1]))

        answer = ask("How long does delivery take?", 1)
        assert answer.find_element(By.CSS_SELECTOR, ".text").text == "Standard delivery takes 3 to 5 business days."
        assert answer.get_attribute("data-action") == "faq"
        assert answer.find_element(By.CSS_SELECTOR, ".sources").text.startswith("Sources: [1] faq.csv:")
        rid = answer.get_attribute("data-response-id")
        answer.find_element(By.CSS_SELECTOR, ".down").click()
        wait.until(lambda _: "thanks" in answer.find_element(By.CSS_SELECTOR, ".status").text)

        handoff = ask("what is the weather on Mars", 2)
        assert handoff.get_attribute("data-action") == "handoff"
        assert "Ticket #" in handoff.find_element(By.CSS_SELECTOR, ".ticket").text
        with Session(state.keys.engine) as s:
            feedback = list(s.scalars(select(Feedback)))
            tickets = list(s.scalars(select(Ticket)))
        assert [(f.response_id, f.thumbs) for f in feedback] == [(rid, "down")]
        assert len(tickets) == 1 and tickets[0].question == "what is the weather on Mars"
        assert browser.execute_script("return localStorage.getItem('genforge-support-session')") == \
            tickets[0].session_id
