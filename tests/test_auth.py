"""Tokens guard the services that leave loopback: the query server and the dashboard (issue 10).

* Bound beyond loopback without its token, the projector's query server and the
  dashboard launcher refuse to start, naming the variable to set.
* With a token, every request to the query server must send
  ``Authorization: Bearer <token>``: without it, or with a wrong one, the answer
  is ``401`` and nothing else (no query runs); with it, queries work, through
  :class:`~modelog.store.reader.Reader` and ``modelog query``.
* The dashboard asks for its token (password field or ``?token=``) before any page.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest
from typer.testing import CliRunner

import modelog.config
from modelog.cli import app
from modelog.config import Settings
from modelog.dashboard import launch
from modelog.errors import ConfigurationError
from modelog.store import query_server
from modelog.store.errors import QueryError
from modelog.store.query_server import QueryServer
from modelog.store.reader import Reader
from modelog.streams.projector import Projector

TOKEN = "tok-" + "7" * 40
BEYOND_LOOPBACK = ["0.0.0.0:0", "[::]:0", "10.1.2.3:8765", "projector:8765"]
WRONG = [None, "", "Bearer", "Bearer ", f"Basic {TOKEN}", f"Bearer {TOKEN[:-1]}",
         f"Bearer {TOKEN}x", f"Bearer {TOKEN.upper()}", "Bearer wrong"]


def _sibling(name: str) -> Any:
    """Another test module (for its helpers and fixtures), loaded by path."""
    path = Path(__file__).with_name(f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"_auth_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_security = _sibling("test_query_security")  # _send: predictions to the log
_web = _sibling("test_dashboard_browser")  # the browser fixture and its waits



def _request(url: str, authorization: str | None, body: bytes | None = None
             ) -> tuple[int, dict[str, str], bytes]:
    headers = {"Authorization": authorization} if authorization is not None else {}
    req = urllib.request.Request(url, data=body, headers=headers,
                                 method="POST" if body is not None else "GET")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read()


# -- the query server ---------------------------------------------------------------
@pytest.mark.parametrize("bind", BEYOND_LOOPBACK)
def test_query_server_beyond_loopback_without_a_token_refuses_to_start(bind: str) -> None:
    with pytest.raises(ConfigurationError, match="MODELOG_QUERY_TOKEN") as info:
        QueryServer(duckdb.connect(), bind)
    assert "beyond loopback" in str(info.value)


@pytest.mark.parametrize("bind", ["127.0.0.1:0", "localhost:0", "127.0.0.2:0"])
def test_query_server_on_loopback_needs_no_token(bind: str) -> None:
    with QueryServer(duckdb.connect(), bind) as srv:
        status, _, body = _request(srv.url + "/query", None, b"select 1 as x")
    assert status == 200 and body


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[QueryServer, list[str]]]:
    """A token-guarded server bound beyond loopback; the SQL it ran."""
    ran: list[str] = []
    real = query_server.run_read_query

    def spy(con: duckdb.DuckDBPyConnection, sql: str, *args: Any, **kwargs: Any) -> Any:
        ran.append(sql)
        return real(con, sql, *args, **kwargs)

    monkeypatch.setattr(query_server, "run_read_query", spy)
    with QueryServer(duckdb.connect(), "0.0.0.0:0", token=TOKEN) as srv:
        yield srv, ran


@pytest.mark.parametrize("authorization", WRONG)
@pytest.mark.parametrize("path", ["/query", "/health", "/", "/nowhere"])
def test_requests_without_the_token_get_401_and_nothing_else(
    server: tuple[QueryServer, list[str]], authorization: str | None, path: str
) -> None:
    srv, ran = server
    body = b"select 42 as secret" if path == "/query" else None
    status, headers, payload = _request(srv.url + path, authorization, body)
    assert status == 401
    assert headers["content-type"] == "application/json"
    assert headers["www-authenticate"].startswith("Bearer")
    answer = json.loads(payload)
    assert set(answer) == {"error", "message"} and answer["error"] == "unauthorized"
    assert "MODELOG_QUERY_TOKEN" in answer["message"]
    assert ran == []  # no query ran


def test_requests_with_the_token_work(server: tuple[QueryServer, list[str]]) -> None:
    srv, ran = server
    status, headers, payload = _request(srv.url + "/query", f"Bearer {TOKEN}",
                                        b"select 42 as x")
    assert status == 200 and headers["content-type"] == query_server.ARROW_STREAM
    assert ran == ["select 42 as x"]
    status, _, payload = _request(srv.url + "/health", f"bearer {TOKEN}")  # any case
    assert status == 200 and json.loads(payload)["ok"] is True
    status, _, payload = _request(srv.url + "/query", f"Bearer {TOKEN}", b"delete from t")
    assert status == 403  # the read-only rules still apply behind the token


def test_the_token_is_compared_in_constant_time(
    server: tuple[QueryServer, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    srv, _ = server
    calls: list[tuple[bytes, bytes]] = []
    real = modelog.config.hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(modelog.config.hmac, "compare_digest", spy)
    assert _request(srv.url + "/health", "Bearer nope")[0] == 401
    assert _request(srv.url + "/health", f"Bearer {TOKEN}")[0] == 200
    assert calls == [(b"nope", TOKEN.encode()), (TOKEN.encode(), TOKEN.encode())]


def test_a_token_on_loopback_is_enforced_too() -> None:
    with QueryServer(duckdb.connect(), token=TOKEN) as srv:
        assert _request(srv.url + "/query", None, b"select 1")[0] == 401
        assert _request(srv.url + "/query", f"Bearer {TOKEN}", b"select 1")[0] == 200


def test_reader_sends_the_token_from_settings(tmp_path: Path) -> None:
    with QueryServer(duckdb.connect(), "0.0.0.0:0", token=TOKEN) as srv:
        s = Settings(data_dir=tmp_path, query_url=srv.url, query_token=TOKEN)
        assert Reader(s).query("select 7 as x").to_pylist() == [{"x": 7}]
        for token in (None, "wrong"):
            with pytest.raises(QueryError, match="refused the request") as info:
                Reader(s.replace(query_token="") if token is None
                       else s.replace(query_token=token)).query("select 7 as x")
            assert "MODELOG_QUERY_TOKEN" in str(info.value)


def test_tokens_are_settings_kept_out_of_repr() -> None:
    s = Settings.from_env({"MODELOG_QUERY_TOKEN": "q1", "MODELOG_DASHBOARD_TOKEN": "d1"})
    assert (s.query_token, s.dashboard_token) == ("q1", "d1")
    assert "q1" not in repr(s) and "d1" not in repr(s)


# -- the projector and `modelog query` ---------------------------------------------
@pytest.mark.broker
def test_projector_beyond_loopback_without_a_token_refuses_to_start(topics: Settings) -> None:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("MODELOG_")},
           **modelog.config.env_for(topics.replace(query_bind="0.0.0.0:0"))}
    proc = subprocess.run([sys.executable, "-m", "modelog", "project"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "MODELOG_QUERY_TOKEN" in proc.stderr and "Traceback" not in proc.stderr
    assert not (topics.data_dir / query_server.PROJECTOR_RUNTIME_FILE).exists()


@pytest.mark.broker
def test_modelog_query_with_the_token(topics: Settings) -> None:
    _security._send(topics, 5)
    served = topics.replace(query_bind="0.0.0.0:0", query_token=TOKEN)
    with Projector(served) as projector:
        left = 5
        for _ in range(300):
            left -= projector.project_once(timeout=0.1)
            if left <= 0:
                break
        runtime = json.loads((topics.data_dir / query_server.PROJECTOR_RUNTIME_FILE).read_text())
        assert TOKEN not in json.dumps(runtime)  # the token is not advertised
        base = {"MODELOG_DATA_DIR": str(topics.data_dir), "MODELOG_QUERY_URL": "",
                "MODELOG_QUERY_TOKEN": ""}
        sql = ["query", "--format", "json", "select count(*) as n from events"]
        ok = CliRunner().invoke(app, sql, env={**base, "MODELOG_QUERY_TOKEN": TOKEN})
        assert ok.exit_code == 0, ok.output
        assert json.loads(ok.stdout) == {"n": 5}
        for token in ("", "wrong"):
            refused = CliRunner().invoke(app, sql, env={**base, "MODELOG_QUERY_TOKEN": token})
            assert refused.exit_code == 1
            assert "refused the request" in refused.output and '"n"' not in refused.output


# -- the dashboard -----------------------------------------------------------------
@pytest.mark.parametrize("address", ["0.0.0.0", "::", "192.168.1.20"])
def test_dashboard_launcher_beyond_loopback_without_a_token_refuses(
    address: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_process(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("no process may start")

    monkeypatch.setattr(launch.subprocess, "Popen", no_process)
    with pytest.raises(ConfigurationError, match="MODELOG_DASHBOARD_TOKEN"):
        launch.run_dashboard(Settings(), address=address)
    monkeypatch.delenv("MODELOG_DASHBOARD_TOKEN", raising=False)
    result = CliRunner().invoke(app, ["dashboard", "--address", address])
    assert result.exit_code == 1 and "MODELOG_DASHBOARD_TOKEN" in result.output


def test_dashboard_launcher_with_a_token_passes_both_tokens(
    monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: dict[str, str] = {}

    class Done:
        def __init__(self, cmd: list[str], env: dict[str, str]) -> None:
            seen.update(env)

        def wait(self) -> int:
            return 0

        def poll(self) -> int:
            return 0

    monkeypatch.setattr(launch.subprocess, "Popen", Done)
    s = Settings(dashboard_token="d-tok", query_token="q-tok")
    assert launch.run_dashboard(s, address="0.0.0.0") == 0
    assert (seen["MODELOG_DASHBOARD_TOKEN"], seen["MODELOG_QUERY_TOKEN"]) == ("d-tok", "q-tok")


def _app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, token: str | None) -> Any:
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("MODELOG_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("MODELOG_QUERY_URL", raising=False)
    if token is None:
        monkeypatch.delenv("MODELOG_DASHBOARD_TOKEN", raising=False)
    else:
        monkeypatch.setenv("MODELOG_DASHBOARD_TOKEN", token)
    return AppTest.from_file(str(launch.APP_PATH), default_timeout=60)


def _gated(at: Any) -> bool:
    titles = [t.value for t in at.title]
    return "Live monitoring" not in titles and [t.label for t in at.text_input] == [
        "Dashboard token"]


def test_dashboard_asks_for_the_token_before_any_page(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = _app(tmp_path, monkeypatch, TOKEN).run()
    assert not at.exception and _gated(at) and not at.error and not at.info
    at.text_input(key="token_input").input("wrong")
    at.button[0].click().run()  # typed, then submitted: one run, as from a browser
    assert _gated(at) and "Wrong token" in at.error[0].value
    at.text_input(key="token_input").input(TOKEN)
    at.button[0].click().run()
    assert not at.exception and "Live monitoring" in [t.value for t in at.title]
    assert at.session_state["modelog_dashboard_token"] == TOKEN
    at.run()  # the session keeps it
    assert "Live monitoring" in [t.value for t in at.title]


def test_dashboard_takes_the_token_from_the_url(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = _app(tmp_path, monkeypatch, TOKEN)
    at.query_params["token"] = TOKEN
    at.run()
    assert not at.exception and "Live monitoring" in [t.value for t in at.title]
    assert "token" not in at.query_params  # taken off the address bar
    wrong = _app(tmp_path, monkeypatch, TOKEN)
    wrong.query_params["token"] = "wrong"
    wrong.run()
    assert _gated(wrong) and "Wrong token" in wrong.error[0].value


def test_dashboard_without_a_token_on_loopback_is_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = _app(tmp_path, monkeypatch, None).run()
    assert not at.exception and "Live monitoring" in [t.value for t in at.title]


# -- the dashboard, served and driven by a browser -------------------------------------
browser = _web.browser


@pytest.mark.browser
@pytest.mark.slow
def test_served_dashboard_asks_a_browser_for_the_token(tmp_path: Path, browser: Any) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    from modelog.streams.broker import free_port

    port, log = free_port(), tmp_path / "dashboard.log"
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("MODELOG_")},
           "MODELOG_DATA_DIR": str(tmp_path / "data"), "MODELOG_DASHBOARD_TOKEN": TOKEN}
    with open(log, "wb") as out:  # the real launcher, beyond loopback
        proc = subprocess.Popen(
            [sys.executable, "-m", "modelog", "dashboard", "--address", "0.0.0.0",
             "--port", str(port)], env=env, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        _web._wait_healthy(url, proc, log, timeout=60)
        browser.get(url)
        _web._wait_for_text(browser, "Dashboard token", timeout=60)
        assert "Live monitoring" not in _web._page_text(browser)

        def submit(token: str) -> None:
            field = browser.find_element(By.CSS_SELECTOR, "input[type=password]")
            field.send_keys(Keys.CONTROL, "a")
            field.send_keys(Keys.DELETE)
            field.send_keys(token)
            browser.find_element(By.XPATH, "//button[.//p[text()='Open the dashboard']]"
                                 ).click()

        submit("wrong")
        _web._wait_for_text(browser, "Wrong token", timeout=30)
        assert "Live monitoring" not in _web._page_text(browser)
        submit(TOKEN)
        _web._wait_for_text(browser, "Live monitoring", timeout=30)
        _web._wait_for_text(browser, "No data yet", timeout=30)
        assert "Dashboard token" not in _web._page_text(browser)

        browser.delete_all_cookies()
        browser.get(f"{url}/?token={TOKEN}")  # a new session, token in the URL
        _web._wait_for_text(browser, "No data yet", timeout=60)
        assert TOKEN not in browser.current_url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_a_json_body_nested_too_deeply_gets_400_and_runs_nothing(
        server: tuple[QueryServer, list[str]]) -> None:
    import httpx

    srv, ran = server
    body = b'{"sql":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    answer = httpx.post(srv.url + "/query", content=body, timeout=30, headers={
        "Authorization": f"Bearer {TOKEN}", "content-type": "application/json"})
    assert answer.status_code == 400
    assert "nested too deeply" in answer.json()["message"] and ran == []
