"""The API trusts no header (issue 14, section 4), proven on a real ``smartzone api`` process (uvicorn on a
free loopback port): proxy headers are handled in the server, so an in-process client could not show them.

- Host and X-Forwarded-Proto never reach a link, not even through the immutable-response cache.
- X-Forwarded-For counts only from ``api.trusted_proxies``: rotating it from any other peer does not
  escape the rate limit.
- Outside development, ``api.base_url`` is required.
- ``/docs`` (Swagger UI) loads only same-origin assets, all served.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import timedelta
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import httpx
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from cli import services
from smartzone.errors import ConfigurationError
from smartzone.settings import Settings
from tests.api.conftest import DAY
from tests.conftest import REPO, settings_env, wait_for

D0 = DAY.strftime("%Y-%m-%dT%H:%M:%SZ")
D1 = (DAY + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
EVIL = {"Host": "evil.example", "X-Forwarded-Proto": "https", "X-Forwarded-Host": "evil.example"}


class ApiProcess:
    def __init__(self, url: str, proc: subprocess.Popen, log: Path) -> None:
        self.url, self.proc, self.log = url, proc, log

    def get(self, path: str, **kwargs) -> httpx.Response:
        return httpx.get(self.url + path, timeout=30, **kwargs)


def api_env(s: Settings, port: int, **api: str) -> dict[str, str]:
    """The environment of a ``smartzone api`` serving the open database of ``s`` on ``port``; ``api``
    adds ``SMARTZONE_API__<NAME>`` variables."""
    env = settings_env(s)
    env.update(
        {
            "SMARTZONE_CHARTER__OPEN_DATABASE": s.charter.open_database,
            "SMARTZONE_API__HOST": "127.0.0.1",
            "SMARTZONE_API__PORT": str(port),
            "SMARTZONE_LOG_LEVEL": "WARNING",
            "FORWARDED_ALLOW_IPS": "*",  # uvicorn's own variable: our settings must win over it
        }
    )
    env.update({f"SMARTZONE_API__{k.upper()}": v for k, v in api.items()})
    return env


@pytest.fixture
def api_process(published, tmp_path) -> Iterator[Callable[..., ApiProcess]]:
    """Start ``python -m cli api`` with the published day's settings and ``SMARTZONE_API__*`` overrides;
    it answers /healthz before the test goes on."""
    procs: list[subprocess.Popen] = []

    def start(**api: str) -> ApiProcess:
        port = services.free_port()
        log = tmp_path / f"api-{len(procs)}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "cli", "api"],
                env=api_env(published, port, **api),
                cwd=REPO,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        procs.append(proc)
        server = ApiProcess(f"http://127.0.0.1:{port}", proc, log)

        def up() -> bool:
            assert proc.poll() is None, log.read_text()
            try:
                return server.get("/healthz").status_code == 200
            except httpx.HTTPError:
                return False

        assert wait_for(up, 30, 0.05), log.read_text()
        return server

    yield start
    for proc in procs:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


# -- 1. links and the cache ---------------------------------------------------------------------------------
def _links(r: httpx.Response) -> str:
    """Everything in a response that may carry a URL: the body and the Link header."""
    return r.headers.get("link", "") + r.text


@pytest.mark.parametrize(
    "api_settings",
    [{}, {"trusted_proxies": '["127.0.0.1"]'}, {"workers": "2"}],
    ids=["no-proxy", "behind-trusted-proxy", "two-workers"],
)
def test_host_and_forwarded_proto_never_reach_a_link_or_the_cache(api_process, api_settings):
    """The attack of the issue: Host + X-Forwarded-Proto on a cacheable, immutable response (a closed day,
    with a next-page link), then a clean request. Neither ever carries the attacker's origin, with or without
    a trusted proxy in front, in one or several worker processes; in development, unset ``api.base_url``
    defaults to the configured host:port."""
    api = api_process(**api_settings)
    own = api.url  # http://127.0.0.1:<port>: api.host and api.port, since base_url is unset
    paths = [
        f"/v1/datasets/parking/observations?from={D0}&to={D1}&limit=1",
        "/v1/datasets",
        "/v1/datasets/parking",
        "/v1/zone",
        "/v1/sensors",
    ]
    for path in paths:
        attacked = api.get(path, headers=EVIL)
        clean = api.get(path)
        for r in (attacked, clean):
            assert r.status_code == 200, (path, r.text[:300])
            assert "evil.example" not in _links(r), (path, _links(r)[:500])
            assert "https://" not in r.headers.get("link", "")
        assert clean.content == attacked.content  # the same answer for everyone: nothing header-made cached
    first = api.get(paths[0])
    assert first.headers["cache-control"].endswith("immutable")
    assert first.headers["link"].startswith(f"<{own}/v1/datasets/parking/observations?")
    assert api.get("/v1/zone").json()["links"]["self"] == f"{own}/v1/zone"


def test_configured_base_url_is_the_only_origin_of_links(api_process):
    api = api_process(base_url="https://data.example.org/")
    r = api.get(f"/v1/datasets/parking/observations?from={D0}&to={D1}&limit=1", headers=EVIL)
    assert r.headers["link"].startswith("<https://data.example.org/v1/datasets/parking/observations?")
    assert api.get("/v1/datasets/parking", headers=EVIL).json()["links"]["self"] == (
        "https://data.example.org/v1/datasets/parking"
    )


def test_base_url_is_required_outside_development(published, tmp_path):
    port = services.free_port()
    env = api_env(published, port, base_url="")
    env["SMARTZONE_ENVIRONMENT"] = "production"
    done = subprocess.run(
        [sys.executable, "-m", "cli", "api"], env=env, cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2, done.stderr
    assert "api.base_url is required" in done.stderr and "SMARTZONE_API__BASE_URL" in done.stderr
    production = published.model_copy(
        update={"environment": "production", "api": published.api.model_copy(update={"base_url": ""})}
    )
    with pytest.raises(ConfigurationError, match=r"api\.base_url is required"):
        create_app(production)
    # the other services start without it: only the API needs a public URL
    assert Settings(environment="production").environment == "production"


def test_bad_proxy_or_base_url_settings_are_refused():
    with pytest.raises(ValueError, match="trusted_proxies"):
        Settings(api={"trusted_proxies": ["*"]})
    with pytest.raises(ConfigurationError, match="base_url"):
        Settings(api={"base_url": "data.example.org"}).public_base_url()
    assert Settings(api={"base_url": "https://data.example.org/"}).public_base_url() == "https://data.example.org"
    assert Settings(api={"host": "0.0.0.0", "port": 8080}).public_base_url() == "http://localhost:8080"
    assert Settings(api={"host": "::1"}).public_base_url() == "http://[::1]:8000"
    assert Settings(api={"trusted_proxies": [" 10.0.0.0/8", "::1"]}).api.trusted_proxies == ["10.0.0.0/8", "::1"]


# -- 2. the rate limit and X-Forwarded-For ------------------------------------------------------------------
def _accepted(api: ApiProcess, forwarded_for: Callable[[int], str], n: int = 30) -> int:
    codes = [api.get("/v1/zone", headers={"X-Forwarded-For": forwarded_for(i)}).status_code for i in range(n)]
    assert set(codes) <= {200, 429}, codes
    return codes.count(200)


def test_rotating_x_forwarded_for_from_an_untrusted_peer_is_limited(api_process):
    """No trusted proxy (the default): the limiter counts the TCP peer, whatever X-Forwarded-For says."""
    api = api_process(rate_limit="0.001", rate_burst="5")
    assert _accepted(api, lambda i: f"203.0.113.{i}") == 5
    r = api.get("/v1/zone", headers={"X-Forwarded-For": "198.51.100.77"})
    assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1


def test_rotating_x_forwarded_for_from_a_peer_that_is_not_the_trusted_proxy_is_limited(api_process):
    """A proxy is configured, but the requests come from elsewhere (here: loopback, not 10.9.9.9)."""
    api = api_process(rate_limit="0.001", rate_burst="5", trusted_proxies='["10.9.9.9"]')
    assert _accepted(api, lambda i: f"203.0.113.{i}") == 5


def test_behind_a_trusted_proxy_the_forwarded_client_is_counted(api_process):
    """From a configured proxy (loopback here), each forwarded client has its own bucket; a client cannot
    escape its bucket by prepending addresses, since the proxy appends the one it saw."""
    api = api_process(rate_limit="0.001", rate_burst="5", trusted_proxies='["127.0.0.0/8", "::1"]')
    assert _accepted(api, lambda i: f"203.0.113.{i}") == 30  # 30 clients, one request each
    assert _accepted(api, lambda i: "198.51.100.7", n=10) == 5  # one client
    assert _accepted(api, lambda i: f"192.0.2.{i}, 198.51.100.8", n=10) == 5  # spoofed hops before the real one


# -- 4. the API documentation without a CDN -----------------------------------------------------------------
class _Assets(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[tuple[str, str]] = []  # (tag, url)
        self.scripts: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag, attrs) -> None:
        a = dict(attrs)
        for name in ("src", "href"):
            if a.get(name):
                self.urls.append((tag, a[name]))
        self._in_script = tag == "script"

    def handle_endtag(self, tag) -> None:
        self._in_script = False

    def handle_data(self, data) -> None:
        if self._in_script:
            self.scripts.append(data)


EXPECTED_TYPES = {"script": "text/javascript", "link": ("text/css", "image/png")}


def _check_docs(get: Callable[[str], httpx.Response], origin: str) -> int:
    page = get("/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    parser = _Assets()
    parser.feed(page.text)
    assert not re.search(r"https?://", page.text), "the page names another origin"
    inline = " ".join(parser.scripts)
    spec = re.search(r"url: '([^']+)'", inline)
    assert spec is not None, inline
    urls = [*parser.urls, ("spec", spec.group(1))]
    assert {t for t, _ in urls} >= {"script", "link", "spec"}
    for tag, url in urls:
        absolute = urljoin(origin + "/docs", url)
        assert urlsplit(absolute)[:2] == urlsplit(origin)[:2], url  # same scheme and host:port
        r = get(urlsplit(absolute).path)
        assert r.status_code == 200, (url, r.status_code)
        kind = r.headers["content-type"].split(";")[0]
        wanted = EXPECTED_TYPES.get(tag, "application/json")
        assert kind in (wanted if isinstance(wanted, tuple) else (wanted,)), (url, kind)
        if url.endswith(".js"):
            assert b"SwaggerUIBundle" in r.content
    return len(urls)


def test_docs_load_only_same_origin_assets_from_the_installed_package(published):
    with TestClient(create_app(published)) as c:
        assert _check_docs(c.get, "http://testserver") >= 4


def test_docs_of_a_real_server_work_offline(api_process):
    api = api_process()
    assert _check_docs(api.get, api.url) >= 4


@pytest.mark.skipif(not (os.path.exists("/usr/bin/chromium")), reason="no chromium installed")
def test_swagger_ui_renders_in_a_headless_browser_without_network(api_process, tmp_path):
    """Chromium, with every host but loopback unreachable, renders the operations of /docs."""
    api = api_process()
    done = subprocess.run(
        [
            "/usr/bin/chromium",
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            f"--user-data-dir={tmp_path / 'chromium'}",
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
            "--virtual-time-budget=15000",
            "--dump-dom",
            f"{api.url}/docs",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "opblock-summary-path" in done.stdout and "/v1/datasets/{id}/observations" in done.stdout, done.stdout[
        -2000:
    ]


def test_a_response_chosen_by_accept_says_so_and_is_cached_per_accept(published):
    """The format of /observations may come from Accept: its cacheable responses carry ``Vary: Accept`` (for
    the caches in front of the API) and the API's own cache keeps one answer per Accept."""
    url = f"/v1/datasets/parking/observations?from={D0}&to={D1}&limit=2"
    with TestClient(create_app(published)) as c:
        for _ in range(2):  # the second round comes from the API's cache
            as_json = c.get(url, headers={"Accept": "application/json"})
            as_csv = c.get(url, headers={"Accept": "text/csv"})
            assert as_json.headers["content-type"] == "application/json" and as_json.json()["observations"]
            assert as_csv.headers["content-type"].startswith("text/csv") and as_csv.text.startswith("time,")
            for r in (as_json, as_csv):
                assert r.headers["cache-control"].endswith("immutable")
                assert "Accept" in [v.strip() for v in r.headers["vary"].split(",")]
        chosen = c.get(url + "&format=csv").headers.get("vary", "")
        assert "Accept" not in [v.strip() for v in chosen.split(",")]  # format= decides, not Accept
