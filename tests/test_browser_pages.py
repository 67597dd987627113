"""The pages without an engine, as a person uses them in Debian's Chromium (Playwright)
against a real `advisor serve` on this GPU-less host: the results page (one row per model,
sorting, filters, cards at 375 px, explained figures, the memory bar's legend and overflow),
where Launch appears and what it says before starting, sign-in that comes back, the models
page, the offline API viewer, Copy on a plain-http origin, the favicon, the dark theme, and
axe-core on every page. With UPDATE_SCREENSHOTS=1 it refreshes docs/screenshots/results.png.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from urllib.parse import parse_qs, urlparse

import pytest
from service import KEY, Service, free_port_range
from test_browser import FLAGS, shot

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
RTX = "/?use_case=chat&gpu=RTX+4090+24GB"
CPU = "/?use_case=edge"
# a cluster plan with its manifests shown (long lines of YAML and shell)
PLAN = "/plan?model=phi-4&nodes=1&gpus_per_node=2&gpu=RTX+4090+24GB"
PAGES = ["/", RTX, CPU, "/models", "/deployments", "/signin", "/schema", PLAN]


@pytest.fixture(scope="module", name="service")
def fx_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    svc = Service(tmp_path_factory.mktemp("pages") / "home", free_port_range(2))
    yield svc
    svc.stop()


@pytest.fixture(scope="module", name="browser")
def fx_browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        # advisor.test: a plain-http origin that is not localhost (no secure context)
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                    args=[*FLAGS, "--host-resolver-rules=MAP advisor.test 127.0.0.1"])
        yield browser
        browser.close()


def no_sideways_scroll(page) -> bool:  # type: ignore[no-untyped-def]
    return bool(page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1"))


def visible_groups(page) -> int:  # type: ignore[no-untyped-def]
    return int(page.evaluate("Array.from(document.getElementById('results').tBodies)"
                             ".filter(b => getComputedStyle(b).display !== 'none').length"))


def test_results_are_one_row_per_model_with_the_others_behind_a_disclosure(service: Service,  # type: ignore[no-untyped-def]
                                                                          browser) -> None:
    ranked = service.http.post("/api/recommend", json={"use_case": "chat",
                                                      "gpu": "RTX 4090 24GB"}).json()["results"]
    first_of: dict[str, str] = {}
    for r in ranked:
        first_of.setdefault(r["model"], r["repo"])
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(service.url + RTX)
    groups = page.locator("#results > tbody")
    assert groups.count() == len(first_of) < len(ranked)
    page.set_viewport_size({"width": 1280, "height": 1000})
    page.evaluate("document.getElementById('res-h').scrollIntoView()")
    shot(page, "results")
    # each model's chosen checkpoint is its first in rank order; the rest in its disclosure
    names = page.eval_on_selector_all("#results > tbody > tr.row td.model > span.muted",
                                      "els => els.map(e => e.textContent)")
    assert all(repo in text for repo, text in zip(first_of.values(), names, strict=True))
    others = page.locator("#results > tbody").first.locator("details.others")
    if others.count():
        assert not others.locator("table").is_visible()
        others.locator("summary").click()
        assert others.locator("table tbody tr").count() >= 1
        assert no_sideways_scroll(page), "an open disclosure does not widen the page"
    # the top ten first, the rest a click away
    assert visible_groups(page) == 10
    page.click("#show-all")
    assert visible_groups(page) == page.locator("#results > tbody.fit").count()
    page.close()


def test_columns_sort_and_filters_narrow_the_results(service: Service, browser) -> None:  # type: ignore[no-untyped-def]
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(service.url + RTX)
    page.click("#results th[data-key=score] button")
    scores = [float(x) for x in page.eval_on_selector_all(
        "#results > tbody",
        "bs => bs.filter(b => getComputedStyle(b).display !== 'none').map(b => b.dataset.score)")]
    assert scores == sorted(scores, reverse=True) and len(scores) == 10
    assert page.get_attribute("#results th[data-key=score]", "aria-sort") == "descending"
    page.click("#results th[data-key=score] button")
    assert page.get_attribute("#results th[data-key=score]", "aria-sort") == "ascending"
    page.click("#results th[data-key=name] button")
    names = page.eval_on_selector_all("#results > tbody", "bs => bs.map(b => b.dataset.name)")
    assert names == sorted(names, key=str.casefold) or names[0].casefold() <= names[-1].casefold()
    # filters: size, quantization, license; what does not fit comes back when asked
    page.select_option("#f-size", "2")
    assert all(float(p) <= 2 for p in page.eval_on_selector_all(
        "#results > tbody:not(.filtered)", "bs => bs.map(b => b.dataset.params)"))
    page.select_option("#f-size", "")
    page.select_option("#f-quant", "awq")
    assert all("awq" in q.split() for q in page.eval_on_selector_all(
        "#results > tbody:not(.filtered)", "bs => bs.map(b => b.dataset.quants)"))
    page.select_option("#f-quant", "")
    page.select_option("#f-license", "apache-2.0")
    assert {x for x in page.eval_on_selector_all("#results > tbody:not(.filtered)",
                                                 "bs => bs.map(b => b.dataset.license)")} == {"apache-2.0"}
    page.select_option("#f-license", "")
    fitting = page.locator("#results > tbody:not(.filtered)").count()
    page.uncheck("#f-fits")
    page.click("#show-all")
    assert page.locator("#results > tbody:not(.filtered)").count() >= fitting
    assert "matching models shown" in page.text_content("#f-count")
    page.close()


def test_figures_are_explained_and_formatted_for_people(service: Service, browser) -> None:  # type: ignore[no-untyped-def]
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(service.url + RTX)
    text = page.inner_text("#results")
    assert not re.search(r"\b1\.0×", text), "1× is written 1×"
    assert not re.search(r"\d\.\d{3,} s\b", text), "no durations to the tenth of a millisecond"
    assert "-token context" in text and "such requests at once" in text
    for key in ("score", "weights", "context", "speed"):
        assert page.get_attribute(f"#results th[data-key={key}] button", "title")
    page.click("details.glossary summary")
    glossary = page.inner_text("details.glossary")
    assert "KV cache" in glossary and "reservation" in glossary and "concurrency" in glossary
    legend = page.inner_text("ul.legend")
    assert all(w in legend for w in ("weights", "engine overhead", "KV cache", "past the budget"))
    # a checkpoint that does not fit shows what goes past the budget (phi-4 in bfloat16:
    # 27.3 GiB of weights against a 21.3 GiB reservation)
    page.uncheck("#f-fits")
    page.click("#show-all")
    over = page.locator("#results .bar:has(.over)")
    assert over.count() > 0, "some checkpoint overflows a 24 GiB card"
    label = over.first.get_attribute("aria-label") or ""
    assert "GiB over it" in label
    width = page.evaluate("parseFloat(document.querySelector('#results .bar .over').style.left)")
    assert 0 < width < 100, "the budget line stands inside the bar, the overflow after it"
    page.close()


def test_at_375_px_rows_become_cards_and_nothing_scrolls_sideways(service: Service, browser) -> None:  # type: ignore[no-untyped-def]
    page = browser.new_page(viewport={"width": 375, "height": 800})
    page.goto(service.url + RTX)
    row = page.locator("#results > tbody > tr.row").first
    assert row.evaluate("r => getComputedStyle(r).display") == "block"
    box = row.bounding_box()
    assert box and box["width"] <= 375
    # every figure of the row is there, labelled, not cut to model, score and a sliver
    shown = row.evaluate("r => Array.from(r.cells).filter(c => getComputedStyle(c).display !== 'none' "
                         "&& c.getBoundingClientRect().height > 0).map(c => c.dataset.label)")
    assert {"Model", "Score", "Memory (GiB)", "Context · at once", "Speed", "Why", "Run"} <= set(shown)
    assert no_sideways_scroll(page)
    page.close()


def test_no_launch_for_a_plan_this_host_cannot_run(service: Service, browser) -> None:  # type: ignore[no-untyped-def]
    page = browser.new_page()
    page.goto(service.url + RTX)
    assert page.locator("form[action='/launch']").count() == 0
    assert "cannot run these plans" in page.inner_text("main")
    # asked directly, the confirmation refuses too, and says why
    page.goto(service.url + "/signin")
    page.fill("#key", KEY)
    page.click("button[type=submit]")
    page.goto(service.url + "/launch?model=qwen2.5-0.5b&gpu=RTX+4090+24GB")
    assert "This host cannot run that plan" in page.inner_text("#launch-error")
    assert page.locator("#launch-start").count() == 0
    page.close()


def test_launch_signed_out_signs_in_and_returns_to_the_launch_with_everything(service: Service,  # type: ignore[no-untyped-def]
                                                                             browser) -> None:
    context = browser.new_context()
    page = context.new_page()
    page.goto(service.url + CPU + "&max_model_len=512")
    form = page.locator("#results > tbody:not(.beyond):not(.filtered) > tr.row > td[data-label=Run] "
                        "form[action='/launch']").first
    button = form.locator("button")
    shown = form.locator("input[name=command]").get_attribute("value")
    model = form.locator("input[name=model]").get_attribute("value")
    # no bare `python`: the interpreter that runs it
    assert shown and not re.match(r"(\S+=\S+ )*python ", shown)
    button.click()
    page.wait_for_url(re.compile(r"/signin\?next="))
    target = parse_qs(urlparse(page.url).query)["next"][0]
    assert target.startswith("/launch?")
    assert parse_qs(urlparse(target).query)["model"] == [model]
    page.fill("#key", KEY)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r"/launch\?"))
    # back on the launch, every field restored: what starts, the download, the Hub
    assert model in page.inner_text("h1")
    assert page.inner_text("#launch-command").strip() == shown
    assert page.locator("#launch-differs").count() == 0
    download = page.inner_text("#launch-download")
    assert "GiB from the Hugging Face Hub" in download and "GiB free" in download
    assert "HF_HUB_OFFLINE" in page.inner_text("#launch-hub")  # the service runs offline
    assert page.locator("#launch-start").is_visible()
    context.close()


def test_sign_in_from_a_results_page_comes_back_to_it(service: Service, browser) -> None:  # type: ignore[no-untyped-def]
    context = browser.new_context()
    page = context.new_page()
    page.goto(service.url + "/")
    page.select_option("#use_case", "code")
    page.fill("#max_model_len", "4096")
    page.click("form[action='/'] button[type=submit]")
    page.click("header a[href^='/signin']")
    page.fill("#key", KEY)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r"/\?"))
    assert "Ranked for code" in page.inner_text("main")
    assert page.input_value("#max_model_len") == "4096"
    assert page.locator("#results form[action='/launch']").count() > 0
    context.close()


def test_the_models_page_searches_filters_sorts_and_links_each_card(service: Service, browser) -> None:  # type: ignore[no-untyped-def]
    page = browser.new_page()
    page.goto(service.url + "/models")
    total = page.locator("#models tbody tr").count()
    hrefs = page.eval_on_selector_all("#models a", "as => as.map(a => a.getAttribute('href'))")
    assert all(h.startswith("https://") for h in hrefs), [h for h in hrefs if not h.startswith("https://")]
    assert page.locator("#models tbody tr a[href^='https://huggingface.co/']").count() >= total
    page.fill("#m-q", "gemma")
    shown = page.locator("#models tbody tr:not([hidden])")
    assert 0 < shown.count() < total and all("gemma" in t.lower() for t in shown.all_inner_texts())
    page.fill("#m-q", "")
    page.select_option("#m-sort", "-params")
    sizes = [float(x) for x in page.eval_on_selector_all("#models tbody tr",
                                                         "rs => rs.map(r => r.dataset.params)")]
    assert sizes == sorted(sizes, reverse=True)
    page.select_option("#m-size", "2")
    assert all(float(x) <= 2 for x in page.eval_on_selector_all(
        "#models tbody tr:not([hidden])", "rs => rs.map(r => r.dataset.params)"))
    page.close()


def test_the_api_viewer_works_offline(service: Service, browser) -> None:  # type: ignore[no-untyped-def]
    page = browser.new_page()
    outside: list[str] = []
    page.on("request", lambda r: None if r.url.startswith(service.url) else outside.append(r.url))
    page.goto(service.url + "/schema")
    text = page.inner_text("main")
    assert "POST /api/recommend" in text and "/api/deployments" in text
    assert outside == [], outside
    assert page.goto(service.url + "/schema/openapi.json").ok  # type: ignore[union-attr]
    page.close()


def test_copy_copies_on_a_plain_http_origin(service: Service, browser) -> None:  # type: ignore[no-untyped-def]
    context = browser.new_context(permissions=["clipboard-read", "clipboard-write"])
    page = context.new_page()
    page.goto(f"http://advisor.test:{service.port}{RTX}")
    assert page.evaluate("window.isSecureContext") is False
    button = page.locator("#results > tbody > tr.row > td[data-label=Run] button.copy").first
    expected = button.get_attribute("data-cmd")
    copied: list[str] = []
    page.expose_function("sawCopy", lambda text: copied.append(text))
    page.evaluate("document.addEventListener('copy', "
                  "() => window.sawCopy(document.getSelection().toString()))")
    button.click()
    page.wait_for_function("document.querySelector('button.copy[data-copied]') !== null")
    assert button.get_attribute("data-copied") == "1"
    assert copied == [expected]
    context.close()


def test_a_favicon_and_a_dark_theme_that_follows_the_system(service: Service, browser) -> None:  # type: ignore[no-untyped-def]
    page = browser.new_page(color_scheme="dark")
    r = page.goto(service.url + "/favicon.ico")
    assert r and r.ok and "svg" in (r.headers.get("content-type") or "")
    page.goto(service.url + "/")
    dark = page.evaluate("getComputedStyle(document.body).backgroundColor")
    page.emulate_media(color_scheme="light")
    light = page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert dark != light and light == "rgb(255, 255, 255)"
    page.close()


@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.parametrize("width", [1280, 375])
def test_axe_finds_nothing_serious_and_no_page_scrolls_sideways(service: Service, browser,  # type: ignore[no-untyped-def]
                                                                width: int, scheme: str) -> None:
    from axe_playwright_python.sync_playwright import Axe

    axe = Axe()
    page = browser.new_page(viewport={"width": width, "height": 900}, color_scheme=scheme)
    for path in PAGES:
        page.goto(service.url + path)
        found = axe.run(page).response["violations"]
        bad = [(v["id"], [n["target"] for n in v["nodes"]][:3]) for v in found
               if v["impact"] in ("serious", "critical")]
        assert bad == [], (path, bad)
        assert no_sideways_scroll(page), path
    page.close()


def test_a_failed_launch_names_its_cause_in_one_sentence_above_the_log(service: Service, browser) -> None:  # type: ignore[no-untyped-def]
    """A Hub model with the Hub out of reach (the service runs with HF_HUB_OFFLINE=1): the
    confirmation warns, and the real CPU engine's failure is one sentence, not a traceback."""
    context = browser.new_context()
    page = context.new_page()
    page.goto(service.url + "/signin?next="
              + "/launch%3Fmodel%3Dsmollm2-360m%26gpus%3D0%26max_model_len%3D512")
    page.fill("#key", KEY)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r"/launch\?"))
    assert "The Hub is unreachable" in page.inner_text("#launch-hub")
    page.click("#launch-start")
    page.wait_for_url(re.compile(r"/deployments/[0-9a-f]+$"))
    page.wait_for_function("document.getElementById('state').textContent === 'failed'", timeout=300_000)
    cause = page.inner_text("#cause")
    assert cause.startswith("The model could not be downloaded: the Hugging Face Hub cannot be reached.")
    assert "huggingface.co" in page.inner_text("#fix")
    above = page.evaluate("document.getElementById('cause').getBoundingClientRect().top < "
                          "document.getElementById('log').getBoundingClientRect().top")
    assert above
    context.close()
