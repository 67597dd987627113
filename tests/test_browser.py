"""The product as a person uses it: Debian's Chromium driven by Playwright against a real
`advisor serve` and the real CPU vLLM engine. With UPDATE_SCREENSHOTS=1 it also refreshes
the README's screenshots in docs/screenshots/.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from service import KEY, Service, free_port_range
from tinymodels import build_servable_model

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SHOTS = Path(__file__).parent.parent / "docs" / "screenshots"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def shot(page, name: str) -> None:  # type: ignore[no-untyped-def]
    if os.environ.get("UPDATE_SCREENSHOTS") == "1":
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=False)


@pytest.fixture(scope="module", name="service")
def fx_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    svc = Service(tmp_path_factory.mktemp("browser") / "home", free_port_range(4))
    yield svc
    svc.stop()


@pytest.fixture(scope="module", name="browser")
def fx_browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), "Debian's chromium is installed by `make test`"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        yield browser
        browser.close()


def test_recommend_launch_watch_chat_and_stop(service: Service, browser, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from axe_playwright_python.sync_playwright import Axe
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    model = build_servable_model(tmp_path / "tiny")
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(f"{service.url}/")
    assert "No GPU: CPU engine" in page.text_content("main")
    # sign in once; the session cookie does the rest
    page.goto(f"{service.url}/signin")
    page.fill("#key", KEY)
    page.click("button[type=submit]")
    page.wait_for_url(f"{service.url}/")
    page.select_option("#use_case", "edge")
    page.fill("#gpus", "0")
    page.fill("#max_model_len", "2048")  # room for a reply long enough to stop half-way
    page.fill("#model", str(model))
    page.click("form[action='/'] button[type=submit]")
    assert page.locator("#results > tbody").count() > 30
    assert page.locator("#results > tbody.fit").count() > 0
    assert "fits" in page.text_content("#own-h + p")
    # Launch… shows what will start, then starts exactly that
    page.click("section[aria-labelledby=own-h] form[action='/launch'] button")
    page.wait_for_url(f"{service.url}/launch?*")
    command = page.inner_text("#launch-command").strip()
    assert "Nothing to download: a local folder" in page.inner_text("#launch-download")
    page.click("#launch-start")
    page.wait_for_url(f"{service.url}/deployments/*")
    dep_id = page.url.rsplit("/", 1)[-1]
    started = service.deployment(dep_id)["command"]
    assert "--max-model-len 2048" in command and started[started.index("--max-model-len") + 1] == "2048"
    # progress: the real phases as a list, with their times, while it starts
    page.wait_for_selector("#phases li", timeout=180_000)
    with contextlib.suppress(PlaywrightTimeout):  # a later phase, if it comes before ready
        page.wait_for_selector("#phases li:nth-child(2)", timeout=120_000)
    shot(page, "launch")
    # the dashboard reaches ready without a reload (server-sent events)
    page.wait_for_function("document.getElementById('state').textContent === 'ready'", timeout=420_000)
    page.wait_for_function("document.querySelector('#phases li[data-phase=ready]') !== null", timeout=30_000)
    phases = page.eval_on_selector_all("#phases li", "ls => ls.map(l => l.dataset.phase)")
    assert phases[-1] == "ready" and "loading_weights" in phases
    assert "compiling" not in phases and "downloading" not in phases, phases
    assert all(re.search(r"\d+ s$", t) for t in page.eval_on_selector_all(
        "#phases li:not([data-phase=ready])", "ls => ls.map(l => l.textContent)")), "each phase has its time"
    page.wait_for_function("document.querySelector('#metrics dd') !== null", timeout=30_000)
    # a chat of several turns, with a system prompt, temperature and max tokens
    assert not page.is_disabled("#chat-send")
    page.click("#chat-settings summary")
    page.fill("#chat-system", "You are terse.")
    page.fill("#chat-temp", "0")
    page.fill("#chat-max", "12")
    for n, text in enumerate(["Hello there", "And once more"], start=1):
        page.fill("#chat-in", text)
        page.click("#chat-send")
        page.wait_for_function(f"document.getElementById('chat-log').dataset.turns === '{n}'", timeout=90_000)
    turns = page.locator("#chat-log .turn")
    assert turns.count() == 4 and "And once more" in turns.nth(2).inner_text()
    assert turns.nth(3).locator("span").inner_text().strip(), "a streamed reply appears"
    # a long reply stopped half-way: the button ends the stream, the turn says so
    page.fill("#chat-max", "1800")
    page.fill("#chat-in", "Tell me a long story")
    # Stop pressed at the reply's first streamed text, from inside the page: the tiny model
    # can finish a short reply before a poll from the test would see the text at all
    page.evaluate("""() => {
      const log = document.getElementById('chat-log'), stop = document.getElementById('chat-stop');
      const seen = new MutationObserver(() => {
        const turns = log.querySelectorAll('.turn'), span = turns[turns.length - 1]?.querySelector('span');
        if (turns.length === 6 && span && span.textContent.length > 0 && !stop.disabled) {
          seen.disconnect();
          stop.click();
        }
      });
      seen.observe(log, {childList: true, subtree: true, characterData: true});
    }""")
    page.click("#chat-send")
    page.wait_for_function("document.getElementById('chat-log').dataset.done === '1'", timeout=30_000)
    assert "(stopped)" in turns.nth(5).inner_text()
    assert not page.is_disabled("#chat-send") and page.is_disabled("#chat-stop")
    # tokens/s is a rate over a window: not 0.0 after replies that ended between two polls
    page.wait_for_function("+document.getElementById('metrics').dataset.tps > 0", timeout=30_000)
    assert page.locator("#series .uplot .u-axis").count() >= 2, "charts have axes"
    assert "GET /health" not in page.inner_text("#log") and page.inner_text("#log").strip()
    bad = [(v["id"], [n["target"] for n in v["nodes"]]) for v in Axe().run(page).response["violations"]
           if v["impact"] in ("serious", "critical")]
    assert bad == []
    page.set_viewport_size({"width": 1280, "height": 1300})
    page.evaluate("document.querySelector('.cards').scrollIntoView()")
    shot(page, "chat")
    # the list is live, with the endpoint and a Stop that stops
    page.goto(f"{service.url}/deployments")
    row = page.locator(f"#deps tr[data-id='{dep_id}']")
    assert "/v1" in row.inner_text()
    row.locator("button", has_text="Stop").click()
    page.wait_for_url(f"{service.url}/deployments")
    page.wait_for_function(f"(document.querySelector(\"#deps tr[data-id='{dep_id}'] [data-col=state]\") || "
                           "{}).textContent === 'stopped'", timeout=60_000)
    # after Stop the chat is off and says why, no raw 404
    page.goto(f"{service.url}/deployments/{dep_id}")
    page.wait_for_function("document.getElementById('chat-send').disabled === true")
    assert "stopped" in page.inner_text("#chat-state")


@pytest.mark.parametrize(("field", "value", "message"), [
    ("gpu_gib", "-3", "must be more than 0"),
    ("max_model_len", "lots", "is not a whole number"),
    ("concurrency", "2.5", "is not a whole number"),
])
def test_form_errors_show_beside_the_field(service: Service, browser, field: str, value: str,  # type: ignore[no-untyped-def]
                                           message: str) -> None:
    page = browser.new_page()
    page.goto(f"{service.url}/")
    page.fill(f"#{field}", value)
    with page.expect_response(lambda r: r.request.method == "POST") as reply:
        page.click("form[action='/'] button[type=submit]")
    assert reply.value.status == 400
    assert message in page.text_content(f"#{field}-err")
    assert page.locator("#results").count() == 0


def test_an_unknown_use_case_is_refused_beside_its_field(service: Service, browser) -> None:  # type: ignore[no-untyped-def]
    page = browser.new_page()
    page.goto(f"{service.url}/")
    page.eval_on_selector("#use_case", "s => { s.options[0].value = 'gaming'; s.selectedIndex = 0; }")
    page.click("form[action='/'] button[type=submit]")
    assert "choose one of" in page.text_content("#use_case-err")


def test_launch_and_stop_forms_carry_a_csrf_token(service: Service) -> None:
    page_html = service.http.get("/").text
    assert 'name="_csrf_token"' in page_html
    # a form post without the token is refused
    r = service.http.post("/", data={"use_case": "edge"})
    assert r.status_code == 403


@pytest.mark.parametrize("path", ["/", "/models", "/deployments", "/signin"])
def test_pages_read_on_a_narrow_screen_without_sideways_scrolling(service: Service, browser,  # type: ignore[no-untyped-def]
                                                                  path: str) -> None:
    page = browser.new_page(viewport={"width": 375, "height": 740})
    page.goto(f"{service.url}{path}")
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")


def test_the_form_can_be_used_with_the_keyboard_alone(service: Service, browser) -> None:  # type: ignore[no-untyped-def]
    page = browser.new_page()
    page.goto(f"{service.url}/")
    for _ in range(40):  # tab until the Recommend button has the focus
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.type === 'submit' && "
                         "document.activeElement.textContent.trim() === 'Recommend'"):
            break
    else:
        pytest.fail("the Recommend button cannot be reached with Tab")
    page.keyboard.press("Enter")
    page.wait_for_selector("#results")
    assert page.locator("#results > tbody").count() > 30


@pytest.mark.parametrize("width", [1280, 375])
def test_a_results_page_does_not_scroll_sideways(service: Service, browser, width: int) -> None:  # type: ignore[no-untyped-def]
    """The one-line JSON twin once widened every results page (by 900-2,000 px)."""
    page = browser.new_page(viewport={"width": width, "height": 900})
    page.goto(f"{service.url}/")
    page.select_option("#gpu", value="RTX 4090 24GB")
    with page.expect_navigation():
        page.click("button[type=submit]")
    assert "Ranked for" in page.inner_text("body")
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
    page.close()
