"""The chat page at / of `jaxsys gpt serve`, in a real browser: Debian's headless Chromium driven by
Playwright (no browser download). Type a message, see the streamed reply equal the API's greedy reply
(temperature 0), clear it with "New chat", and repeat. Skips, saying why, when Chromium or Playwright
is missing (.ci/run installs both)."""

import os
import shutil
from pathlib import Path

import httpx
import numpy as np
import pytest

from jaxsys.gpt.config import GPTConfig
from jaxsys.gpt.model import param_shapes
from jaxsys.gpt.serve import ServeConfig, ServerThread, create_app
from jaxsys.gpt.tokenizer import Tokenizer

CHROMIUM = os.environ.get("JAXSYS_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_FLAGS = [  # what Chromium needs on a machine with no network and no GPU, run as root
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# the screenshot goes to the test's temporary folder, or where JAXSYS_SCREENSHOT says
# (experiments/results/chat_page.png is refreshed that way)
SCREENSHOT_ENV = "JAXSYS_SCREENSHOT"

TOK = Tokenizer.from_corpus("hello world, how are you? fine.", chat=True)
CFG = GPTConfig(vocab_size=TOK.vocab_size, n_embd=16, n_head=2, n_layer=1, block_size=48)


def _browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (pip install -e '.[dev]'); the chat page was NOT tested")
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium); the chat page was NOT tested")
    return sync_playwright


@pytest.fixture(scope="module")
def server():
    rng = np.random.default_rng(3)
    params = {k: rng.normal(0, 0.3, s) for k, s in param_shapes(CFG).items()}
    with ServerThread(create_app(params, CFG, TOK, ServeConfig(max_batch=2, chunk_steps=2))) as srv:
        yield srv


def _greedy(url, messages):
    r = httpx.post(url + "/v1/chat/completions", json={"messages": messages, "temperature": 0}, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()["choices"][0]["message"]["content"]


def test_chat_page_streams_the_greedy_reply(server, tmp_path):
    sync_playwright = _browser()
    url = server.url
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS[1:], headless=True)
        try:
            page = browser.new_page(viewport={"width": 900, "height": 600})
            page.goto(url + "/")
            assert page.title() == "jaxsys chat"
            page.fill("#temp", "0")  # a range input: the greedy reply
            page.dispatch_event("#temp", "input")
            assert page.text_content("#temp-value") == "0.00"
            for round_ in range(2):
                page.fill("#msg", "hello")
                page.click("#send")
                page.wait_for_selector(".msg.assistant[data-done='1']", timeout=60_000)
                reply = page.text_content(".msg.assistant")
                assert reply == _greedy(url, [{"role": "user", "content": "hello"}]), round_
                assert page.text_content(".msg.user") == "hello"
                # a second turn carries the history: the reply equals the API's for the whole conversation
                page.fill("#msg", "how are you?")
                page.click("#send")
                page.wait_for_selector(".msg.assistant:nth-of-type(4)[data-done='1']", timeout=60_000)
                second = page.locator(".msg.assistant").nth(1).text_content()
                history = [
                    {"role": "user", "content": "hello"},
                    {"role": "assistant", "content": reply},
                    {"role": "user", "content": "how are you?"},
                ]
                assert second == _greedy(url, history)
                if round_ == 0:
                    shot = Path(os.environ.get(SCREENSHOT_ENV) or tmp_path / "chat_page.png")
                    shot.parent.mkdir(parents=True, exist_ok=True)
                    page.screenshot(path=str(shot))
                    assert shot.stat().st_size > 1000
                page.click("#new")  # "New chat": the conversation is gone, the next one starts fresh
                assert page.locator(".msg").count() == 0
            page.fill("#msg", "QZ")  # characters outside the vocabulary: the 400's message is shown
            page.click("#send")
            page.wait_for_selector(".msg.error", timeout=60_000)
            assert "not in the model's vocabulary" in page.text_content(".msg.error")
        finally:
            browser.close()
