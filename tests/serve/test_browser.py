"""The web chat and the A/B dashboard end to end in headless Chromium (Debian's chromium + chromedriver,
driven by Selenium): a streamed reply, thumbs, a suggested answer, and the per-variant charts."""

import json

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait
from sqlalchemy import select
from sqlalchemy.orm import Session

from genforge.serve.db import Feedback, StoredResponse

pytestmark = pytest.mark.browser


def test_chat_page_streams_and_takes_feedback_and_the_dashboard_charts(serve_cfg, live, llama_dir, browser):
    with live(serve_cfg(variant=[f"b={llama_dir}:0.5"])) as (url, state):
        wait = WebDriverWait(browser, 60)
        browser.get(f"{url}/")
        assert browser.current_url.endswith("/ui/chat")
        wait.until(lambda d: d.execute_script("return model") == "tiny")
        browser.find_element(By.ID, "input").send_keys("Hello there")
        browser.find_element(By.ID, "send").click()
        reply = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, ".assistant .tools") and
                           d.find_element(By.CSS_SELECTOR, ".assistant"))
        rid = reply.get_attribute("data-response-id")
        assert rid.startswith("chatcmpl-")
        reply.find_element(By.CSS_SELECTOR, ".up").click()
        wait.until(lambda d: "thanks" in reply.find_element(By.CSS_SELECTOR, ".status").text)
        reply.find_element(By.CSS_SELECTOR, ".better").click()
        reply.find_element(By.CSS_SELECTOR, ".correction").send_keys("A better answer.")
        reply.find_element(By.CSS_SELECTOR, ".submit-correction").click()
        with Session(state.keys.engine) as s:
            wait.until(lambda _: len(list(s.scalars(select(Feedback)))) == 2 or s.expire_all())
            rows = list(s.scalars(select(Feedback).order_by(Feedback.id)))
            stored = s.get(StoredResponse, rid)
        assert [(f.response_id, f.thumbs, f.correction) for f in rows] == [(rid, "up", None),
                                                                            (rid, None, "A better answer.")]
        page_text = reply.find_element(By.CSS_SELECTOR, ".text").get_attribute("textContent")
        assert stored.model == "tiny" and stored.variant in ("tiny", "b")
        assert page_text == json.loads(stored.response)[0]  # the reply shown is the stored one
        assert "x-genforge-variant" not in browser.page_source.lower()

        browser.get(f"{url}/ui/dashboard")
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "tr.variant-row")) == 2)
        charts = browser.find_elements(By.CSS_SELECTOR, "canvas.bars")
        assert [c.get_attribute("data-title") for c in charts] == ["impressions", "feedback rate", "positive rate",
                                                                   "latency p50"]
        assert "Recommendation: keep" in browser.find_element(By.ID, "recommendation").text
