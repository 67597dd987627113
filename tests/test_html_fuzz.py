"""Fuzz the recommendation form through the HTML routes (POST / and GET /?…), as a browser
sends it, against a real `advisor serve`: every field of the form, hypothesis-generated. No
answer is a 500; a refusal is a 400 (or 401 for a gated model without a key) whose every
message sits beside a field of the form, or in the alert on top for a field it lacks.
(tests/test_fuzz.py fuzzes the JSON API the same way, from its schema.)"""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from service import Service, free_port_range

from advisor.specs import USE_CASES
from advisor.web.pages import FORM_FIELDS

pytestmark = pytest.mark.slow

NUMBER_TEXT = st.one_of(
    st.just(""), st.integers(-5, 300_000).map(str), st.floats(allow_nan=True, allow_infinity=True).map(str),
    st.sampled_from(["0", "-0", "1e400", "nan", "inf", "8G", "8GiB", "25.6k", "1.5G", " 7 ", "0x10",
                     "١٢", "9" * 30, "16777217"]),
    st.text(max_size=12))
FIELDS = {
    "use_case": st.one_of(st.sampled_from(USE_CASES), st.text(max_size=10)),
    "gpu": st.one_of(st.just(""), st.sampled_from(["RTX 4090 24GB", "T4 16GB", "H100 80GB"]),
                     st.text(max_size=12)),
    "gpu_gib": NUMBER_TEXT, "gpus": NUMBER_TEXT, "max_model_len": NUMBER_TEXT,
    "concurrency": NUMBER_TEXT, "max_num_seqs": NUMBER_TEXT, "kv_cache_memory_bytes": NUMBER_TEXT,
    "model": st.one_of(st.just(""), st.sampled_from(["qwen2.5-0.5b", "Qwen/Qwen2.5-0.5B-Instruct",
                                                     "/etc", "../..", "nope/nope"]), st.text(max_size=20)),
    "vllm_version": st.one_of(st.just(""), st.sampled_from(["0.32.0", "0.10.1.1", "v0.9.2", "banana"]),
                              st.text(max_size=70)),
    "enforce_eager": st.sampled_from(["", "1", "on", "off", "maybe"]),
    "text_only": st.sampled_from(["", "1", "true", "no", "x"]),
}
ERR = re.compile(r'id="([a-z_]+)-err"')


@pytest.fixture(scope="module", name="client")
def fx_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[httpx.Client, str]]:
    svc = Service(tmp_path_factory.mktemp("htmlfuzz") / "home", free_port_range(2))
    client = httpx.Client(base_url=svc.url, timeout=60)  # a browser: cookies, no key
    page = client.get("/").text
    token = re.search(r'name="_csrf_token" value="([^"]+)"', page)
    assert token, "the form carries a CSRF token"
    yield client, token[1]
    client.close()
    svc.stop()


def check(r: httpx.Response, form: dict[str, str]) -> None:
    assert r.status_code in (200, 400, 401), (r.status_code, form, r.text[-800:])
    beside = set(ERR.findall(r.text))
    assert beside <= {*FORM_FIELDS, "form"}, beside
    if r.status_code != 200:
        assert beside, f"a refusal names its field: {form}"
    else:
        assert "Ranked for" in r.text or "No model in the catalog" in r.text


@settings(max_examples=60, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(form=st.fixed_dictionaries({}, optional=FIELDS))
def test_the_form_posted_never_answers_500_and_names_the_field(client: tuple[httpx.Client, str],
                                                               form: dict[str, str]) -> None:
    http, token = client
    r = http.post("/", data={**form, "_csrf_token": token})
    check(r, form)


@settings(max_examples=30, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(form=st.fixed_dictionaries({"use_case": FIELDS["use_case"].filter(bool)},
                                  optional={k: v for k, v in FIELDS.items() if k != "use_case"}))
def test_the_form_as_a_results_address_never_answers_500(client: tuple[httpx.Client, str],
                                                         form: dict[str, str]) -> None:
    http, _ = client
    check(http.get("/", params=form), form)


def test_an_8_gib_budget_for_this_host_ranks(client: tuple[httpx.Client, str]) -> None:
    """The 500 of the issue: a memory budget of 8 GiB on 'this host'."""
    http, token = client
    for use in USE_CASES:
        r = http.post("/", data={"use_case": use, "gpu_gib": "8", "_csrf_token": token})
        assert r.status_code == 200, (use, r.text[-500:])


