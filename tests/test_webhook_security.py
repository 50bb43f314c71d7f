"""Webhook hardening (issue 10): where a webhook may go, signatures that cannot be replayed,
and signing secrets that never reach the log in clear.

* server-side request forgery: a webhook reaches public addresses only, unless the
  operator allows private ones (``MODELOG_WEBHOOK_ALLOW_PRIVATE=1`` for the worker,
  ``--allow-private`` for ``modelog alerts subscribe``), checked at subscribe time
  and again before every request, which goes to the address that was checked;
* ``Modelog-Signature: t=<unix seconds>,v1=<hmac>`` covers the timestamp and the body;
* secrets are encrypted with the deployment key (``MODELOG_SECRET_KEY``).

Host names ending in ``.test`` never resolve for real (RFC 2606): a fake resolver
answers for them, so a request that reaches the receiver through such a name went
to the address the sender checked, not to a second lookup.
"""

from __future__ import annotations

import dataclasses
import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from modelog.config import Settings
from modelog.errors import ConfigurationError
from modelog.models import codec
from modelog.models.alerts import (
    address_rule,
    open_secret,
    request_headers,
    seal_secret,
    signature,
    subscription_event,
    verify_signature,
)
from modelog.models.errors import WebhookSecretError, WebhookTargetError
from modelog.models.events import AlertDelivered, DriftDetected
from modelog.models.ids import new_id
from modelog.models.upcasters import WITHHELD_V1_SECRET
from modelog.store.outbox import DeliveryLedger
from modelog.streams.delivery import deliver_once
from modelog.streams.registry_agent import LogTail
from modelog.streams.subscriptions import subscribe
from modelog.streams.topics import Topics
from modelog.streams.webhooks import UNRESOLVED, WebhookSender, resolve_webhook

KEY = "deployment key for the tests"
SECRET = "hunter2-do-not-leak-9f3a"
PUBLIC = "93.184.216.34"
FAST: dict[str, Any] = {"backoff": (0.01, 0.02), "http_timeout": 5.0, "timeout": 30.0}


def _drift() -> DriftDetected:
    return DriftDetected(id=new_id(), time=codec.utcnow(), aggregate="churn", model="churn",
                         kind="concept", detector="adwin", statistic=0.4, severity="critical")


# -- a fake resolver for *.test names, a real receiver ------------------------------------
class Resolver:
    """Answers for ``*.test`` names: each lookup takes the next answer (the last one sticks)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.answers: dict[str, list[list[str]]] = {}
        self.lookups: list[str] = []
        real = socket.getaddrinfo

        def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
            name = host.decode() if isinstance(host, bytes) else str(host)
            if name not in self.answers:
                return real(host, port, *args, **kwargs)
            self.lookups.append(name)
            queue = self.answers[name]
            ips = queue.pop(0) if len(queue) > 1 else queue[0]
            return [(socket.AF_INET6 if ":" in ip else socket.AF_INET, socket.SOCK_STREAM,
                     socket.IPPROTO_TCP, "", (ip, port)) for ip in ips]

        monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)

    def __setitem__(self, name: str, answers: list[list[str]]) -> None:
        self.answers[name] = list(answers)


@pytest.fixture
def resolver(monkeypatch: pytest.MonkeyPatch) -> Resolver:
    return Resolver(monkeypatch)


class Receiver:
    """A webhook receiver on 127.0.0.1 that records every request."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                receiver.requests.append({"path": self.path, "body": body,
                                          "headers": dict(self.headers.items())})
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}/hook-{uuid.uuid4().hex[:8]}"

    def at(self, url: str) -> list[dict[str, Any]]:
        path = "/" + url.split("/", 3)[3]
        return [r for r in self.requests if r["path"] == path]


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.server.shutdown()
    r.server.server_close()


# -- 1. server-side request forgery ---------------------------------------------------------
@pytest.mark.parametrize(("address", "rule"), [
    ("127.0.0.1", "a loopback address"), ("127.1.2.3", "a loopback address"),
    ("10.0.0.1", "a private address"), ("172.16.5.4", "a private address"),
    ("192.168.1.1", "a private address"), ("169.254.10.1", "a link-local address"),
    ("0.0.0.0", "the unspecified address"), ("224.0.0.1", "a multicast address"),
    ("240.0.0.1", "a reserved address"), ("100.64.0.1", "not globally routable"),
    ("169.254.169.254", "a cloud metadata endpoint"), ("169.254.170.2", "cloud metadata"),
    ("100.100.100.200", "cloud metadata"), ("168.63.129.16", "cloud metadata"),
    ("::1", "a loopback address"), ("::", "the unspecified address"),
    ("fe80::1", "a link-local address"), ("fe80::1%eth0", "a link-local address"),
    ("fc00::1", "a private address"), ("ff02::1", "a multicast address"),
    ("fd00:ec2::254", "a cloud metadata endpoint"),
    ("::ffff:127.0.0.1", "a loopback address (IPv4 127.0.0.1 in IPv6)"),  # IPv4-mapped
    ("::ffff:10.1.1.1", "a private address"),
    ("::ffff:169.254.169.254", "a cloud metadata endpoint"),
    ("2002:7f00:1::1", "a loopback address"),  # 6to4 of 127.0.0.1
    ("64:ff9b::a9fe:a9fe", "a cloud metadata endpoint"),  # NAT64 of 169.254.169.254
    (PUBLIC, None), ("2606:4700:4700::1111", None), ("::ffff:8.8.8.8", None),
])
def test_address_rules(address: str, rule: str | None) -> None:
    found = address_rule(address)
    assert found == rule if rule is None else rule in (found or "")


def test_loopback_url_is_refused_with_the_rule_and_how_to_allow_it() -> None:
    with pytest.raises(WebhookTargetError) as info:
        resolve_webhook("http://127.0.0.1:9/x")
    assert str(info.value) == (
        "refusing http://127.0.0.1:9/x: 127.0.0.1 is a loopback address; webhooks may only "
        "reach public addresses. For a receiver on this machine or a private network, set "
        "MODELOG_WEBHOOK_ALLOW_PRIVATE=1 (and pass --allow-private to subscribe)")
    assert (info.value.address, info.value.rule) == ("127.0.0.1", "a loopback address")
    assert resolve_webhook("http://127.0.0.1:9/x", allow_private=True).addresses == ("127.0.0.1",)


@pytest.mark.parametrize("url", [
    "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
    "http://[fd00:ec2::254]/latest/meta-data/", "http://[::ffff:a9fe:a9fe]/",
])
def test_cloud_metadata_is_refused_even_when_private_addresses_are_allowed(url: str) -> None:
    with pytest.raises(WebhookTargetError, match=r"cloud metadata endpoint.*never"):
        resolve_webhook(url, allow_private=True)


def test_a_name_is_refused_when_any_of_its_addresses_is_forbidden(resolver: Resolver) -> None:
    resolver["multi.test"] = [[PUBLIC, "10.0.0.7"]]
    resolver["v6.test"] = [["2606:4700:4700::1111", "::ffff:127.0.0.1"]]
    resolver["public.test"] = [[PUBLIC]]
    with pytest.raises(WebhookTargetError) as info:
        resolve_webhook("https://multi.test/hook")
    assert "multi.test resolves to 10.0.0.7, a private address" in str(info.value)
    with pytest.raises(WebhookTargetError, match=r"v6\.test resolves to ::ffff:127\.0\.0\.1"):
        resolve_webhook("https://v6.test/hook")
    assert resolve_webhook("https://public.test/hook").addresses == (PUBLIC,)


def test_only_http_and_resolvable_urls(resolver: Resolver) -> None:
    with pytest.raises(WebhookTargetError, match="http:// or https:// only"):
        resolve_webhook("file:///etc/passwd", allow_private=True)
    with pytest.raises(WebhookTargetError) as info:
        resolve_webhook("http://no-such-host.invalid/x")
    assert info.value.rule == UNRESOLVED


def test_cli_subscribe_refuses_private_targets_before_touching_the_broker(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from typer.testing import CliRunner

    from modelog.cli import app

    monkeypatch.setenv("MODELOG_BROKER", "127.0.0.1:1")  # never reached
    monkeypatch.setenv("MODELOG_WEBHOOK_ALLOW_PRIVATE", "1")  # the worker's setting, not consent
    runner = CliRunner()
    for url, words in [("http://127.0.0.1:9/x", ("loopback", "--allow-private")),
                       ("http://169.254.169.254/latest/meta-data/", ("cloud metadata",)),
                       ("http://[::ffff:7f00:1]:9/x", ("loopback",))]:
        result = runner.invoke(app, ["alerts", "subscribe", url])
        assert result.exit_code == 1, result.output
        assert all(w in result.output for w in ("refusing", *words)), result.output
    metadata = runner.invoke(app, ["alerts", "subscribe", "--allow-private",
                                   "http://169.254.169.254/latest/meta-data/"])
    assert metadata.exit_code == 1 and "never" in metadata.output


def test_sender_refuses_a_loopback_receiver_and_sends_nothing(receiver: Receiver) -> None:
    url = receiver.url()
    sub = subscription_event(url)
    outcome = WebhookSender(max_attempts=3, backoff=(0.01, 0.02)).send(sub, _drift())
    assert outcome is not None and not outcome.ok
    assert outcome.attempts == 0 and outcome.status_code is None
    assert "loopback" in (outcome.error or "") and "ALLOW_PRIVATE" in (outcome.error or "")
    assert receiver.at(url) == []


def test_the_request_goes_to_the_address_that_was_checked(
    receiver: Receiver, resolver: Resolver,
) -> None:
    # rebind.test answers 127.0.0.1 once, then the metadata address: a client that
    # looked the name up again to connect would have gone there (or failed: .test
    # names do not resolve for real).
    resolver["rebind.test"] = [["127.0.0.1"], ["169.254.169.254"]]
    url = receiver.url("rebind.test")
    sub = subscription_event(url)
    with WebhookSender(allow_private=True) as sender:
        outcome = sender.send(sub, _drift())
        assert outcome is not None and outcome.ok, outcome
        [request] = receiver.at(url)
        assert request["headers"]["Host"] == f"rebind.test:{receiver.port}"
        assert resolver.lookups == ["rebind.test"]
        # the next delivery looks the name up again, and now refuses it
        refused = sender.send(sub, _drift())
    assert refused is not None and not refused.ok and refused.attempts == 0
    assert "rebind.test resolves to 169.254.169.254" in (refused.error or "")
    assert len(receiver.at(url)) == 1


def _tls_receiver(tmp_path: Any, name: str) -> tuple[ThreadingHTTPServer, list[str], Any]:
    """An HTTPS receiver on 127.0.0.1 with a self-signed certificate for ``name``."""
    import datetime as dt
    import ssl

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    pem, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    hosts: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            hosts.append(self.headers["Host"])
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pem, key_file)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, hosts, pem


def test_https_keeps_the_name_for_sni_and_the_certificate_check(
    tmp_path: Any, resolver: Resolver, monkeypatch: pytest.MonkeyPatch,
) -> None:
    server, hosts, pem = _tls_receiver(tmp_path, "secure.test")
    monkeypatch.setenv("SSL_CERT_FILE", str(pem))  # trust the test certificate
    resolver["secure.test"] = [["127.0.0.1"]]
    resolver["impostor.test"] = [["127.0.0.1"]]
    port = server.server_address[1]
    try:
        with WebhookSender(allow_private=True, max_attempts=1) as sender:
            assert sender.post(f"https://secure.test:{port}/h", b"{}", {}) == (200, None, None)
            # the certificate is checked against the name, not the address connected to
            status, error, _ = sender.post(f"https://impostor.test:{port}/h", b"{}", {})
    finally:
        server.shutdown()
        server.server_close()
    assert status is None and "not valid for 'impostor.test'" in (error or "")
    assert hosts == [f"secure.test:{port}"]


# -- 2. signatures that cannot be replayed --------------------------------------------------
def test_signature_covers_timestamp_and_body() -> None:
    body, t = b'{"type":"DriftDetected"}', 1767225600
    header = signature(SECRET, body, t)
    assert header.startswith(f"t={t},v1=")
    assert verify_signature(SECRET, header, body, now=t + 299)
    assert not verify_signature(SECRET, header, body, now=t + 301)  # replayed later
    assert not verify_signature(SECRET, header, body, now=t - 301)  # from the future
    assert verify_signature(SECRET, header, body, tolerance=3600, now=t + 1000)
    forged_t = header.replace(f"t={t}", f"t={t + 600}")  # a fresh time on an old signature
    assert not verify_signature(SECRET, forged_t, body, now=t + 600)
    assert not verify_signature(SECRET, header, body + b" ", now=t)
    assert not verify_signature("other secret", header, body, now=t)
    # several v1 values (a receiver rotating secrets) and unknown entries are fine
    rotated = f"t={t},v1={'0' * 64},v0=ignored,v1={header.split('v1=')[1]}"
    assert verify_signature(SECRET, rotated, body, now=t)
    for bad in ("", "garbage", f"v1={'0' * 64}", f"t={t}", "t=soon,v1=00", "t=-5,v1=00"):
        assert not verify_signature(SECRET, bad, body, now=t)
    # the old body-only scheme is not accepted
    import hashlib
    import hmac

    old = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert not verify_signature(SECRET, old, body, now=t)


def test_request_is_signed_at_send_time() -> None:
    sub = subscription_event("https://hooks.example/a")
    alert = _drift()
    body = codec.encode(alert)
    headers = request_headers(sub, alert, body, secret=SECRET, now=1767225600.7)
    assert headers["Modelog-Signature"].startswith("t=1767225600,v1=")
    assert headers["Modelog-Event-Id"] == alert.id
    assert verify_signature(SECRET, headers["Modelog-Signature"], body, now=1767225601)
    assert "Modelog-Signature" not in request_headers(sub, alert, body)
    fresh = request_headers(sub, alert, body, secret=SECRET)["Modelog-Signature"]
    assert verify_signature(SECRET, fresh, body)
    assert abs(int(fresh[2:12]) - time.time()) < 5


# -- 3. secrets never in clear ------------------------------------------------------------------
def test_secret_is_sealed_for_its_subscription() -> None:
    event = subscription_event("https://hooks.example/a", secret=SECRET, secret_key=KEY)
    raw = codec.encode(event)
    assert SECRET.encode() not in raw and b'"secret":' not in raw
    assert event.secret_ciphertext is not None and event.schema_version == 2
    assert open_secret(KEY, event.secret_ciphertext, event.subscription_id) == SECRET
    with pytest.raises(WebhookSecretError, match="MODELOG_SECRET_KEY is not the key"):
        open_secret("wrong key", event.secret_ciphertext, event.subscription_id)
    with pytest.raises(WebhookSecretError):  # copied onto another subscription
        open_secret(KEY, event.secret_ciphertext, "another-subscription")
    with pytest.raises(WebhookSecretError, match="set MODELOG_SECRET_KEY"):
        open_secret(None, event.secret_ciphertext, event.subscription_id)
    assert seal_secret(KEY, SECRET, "s") != seal_secret(KEY, SECRET, "s")  # fresh nonces


def test_a_secret_without_a_key_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="set MODELOG_SECRET_KEY"):
        subscription_event("https://hooks.example/a", secret=SECRET)
    assert subscription_event("https://hooks.example/a").secret_ciphertext is None


def test_cli_subscribe_with_a_secret_needs_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from modelog.cli import app

    monkeypatch.setenv("MODELOG_BROKER", "127.0.0.1:1")
    monkeypatch.delenv("MODELOG_SECRET_KEY", raising=False)
    result = CliRunner().invoke(app, ["alerts", "subscribe", "https://hooks.example/a",
                                      "--secret", SECRET])
    assert result.exit_code == 1 and "MODELOG_SECRET_KEY" in result.output, result.output


def test_v1_subscriptions_lose_their_clear_secret_on_read() -> None:
    v1 = json.dumps({"type": "AlertSubscriptionCreated", "schema_version": 1, "id": "e-1",
                     "time": "2026-03-03T12:00:00Z", "aggregate": "s-1",
                     "subscription_id": "s-1", "url": "https://hooks.example/a",
                     "secret": SECRET}).encode()
    event = codec.decode(v1)
    assert event.schema_version == 2 and SECRET.encode() not in codec.encode(event)
    assert getattr(event, "secret_ciphertext", None) == WITHHELD_V1_SECRET
    with pytest.raises(WebhookSecretError, match="subscribe again"):
        open_secret(KEY, WITHHELD_V1_SECRET, "s-1")
    unsigned = codec.decode(v1.replace(f'"{SECRET}"'.encode(), b"null"))
    assert getattr(unsigned, "secret_ciphertext", "?") is None


def test_v1_ledger_rows_are_rewritten_without_the_secret(tmp_path: Any) -> None:
    import sqlite3

    path = tmp_path / "delivery.sqlite"
    with DeliveryLedger(path):
        pass
    v1 = json.dumps({"type": "AlertSubscriptionCreated", "id": "e-1",
                     "time": "2026-03-03T12:00:00Z", "aggregate": "s-1",
                     "subscription_id": "s-1", "url": "https://hooks.example/a",
                     "secret": SECRET}).encode()
    con = sqlite3.connect(path)
    con.execute("INSERT INTO book_events VALUES ('e-1', ?)", (v1,))
    con.commit()
    con.close()
    with DeliveryLedger(path) as ledger:
        assert "s-1" in ledger.book()
    assert SECRET.encode() not in path.read_bytes()


# -- with a broker: the worker ----------------------------------------------------------------
def _read(settings: Settings, topic: str) -> list[bytes]:
    with LogTail(settings, topic) as tail:
        return [v for _p, _o, _k, v in tail.read_to_end(15)]


def _produce(settings: Settings, *events: Any) -> None:
    from confluent_kafka import Producer

    from modelog.streams.kafka import producer_config

    topics = Topics.from_settings(settings)
    producer = Producer(producer_config(settings, linger_ms=0, bulk=True))
    for ev in events:
        producer.produce(topics.for_event(ev), key=ev.aggregate.encode(), value=codec.encode(ev))
    assert producer.flush(15) == 0


@pytest.mark.broker
def test_worker_refuses_private_receivers_unless_allowed(
    topics: Settings, receiver: Receiver, resolver: Resolver,
) -> None:
    """Subscribed while allowed, or while the name resolved to a public address: with the
    setting off, the worker refuses at delivery time, records the failure with its reason
    and never tries again."""
    allowed = dataclasses.replace(topics, webhook_allow_private=True)
    direct = receiver.url()
    sid_direct = subscribe(allowed, direct)
    resolver["rebound.test"] = [[PUBLIC], ["127.0.0.1"]]  # public when subscribing, then not
    rebound = receiver.url("rebound.test")
    sid_rebound = subscribe(topics, rebound)
    _produce(topics, _drift())

    run = deliver_once(topics, max_attempts=5, **FAST)  # webhook_allow_private off

    assert receiver.at(direct) == [] and receiver.at(rebound) == []
    assert (run.delivered, run.failed) == (0, 2)
    with DeliveryLedger(topics.data_dir / "delivery.sqlite") as ledger:
        records = {d.subscription_id: d for d in ledger.deliveries()}
    assert set(records) == {sid_direct, sid_rebound}
    assert all(not r.ok and r.attempts == 0 for r in records.values())
    assert "127.0.0.1 is a loopback address" in (records[sid_direct].error or "")
    assert "rebound.test resolves to 127.0.0.1" in (records[sid_rebound].error or "")
    assert all("MODELOG_WEBHOOK_ALLOW_PRIVATE=1" in (r.error or "") for r in records.values())
    reports = [e for e in map(codec.decode, _read(topics, Topics.from_settings(topics)
                                                    .subscriptions))
               if isinstance(e, AlertDelivered)]
    assert sorted(r.subscription_id for r in reports if not r.ok) == sorted(
        [sid_direct, sid_rebound])
    # recorded as failed: a later run does not try again, even with the setting on
    again = deliver_once(allowed, **FAST)
    assert again.delivered == 0 and receiver.at(direct) == []


@pytest.mark.broker
def test_secrets_are_only_ciphertext_on_the_log_and_in_the_databases(
    topics: Settings, receiver: Receiver, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from modelog.streams.projector import Projector

    settings = dataclasses.replace(topics, webhook_allow_private=True, secret_key=KEY)
    signed, plain = receiver.url(), receiver.url()
    sid = subscribe(settings, signed, secret=SECRET)
    subscribe(settings, plain)
    # the CLI too (MODELOG_SECRET_KEY from the environment, --allow-private for the address)
    from typer.testing import CliRunner

    from modelog.cli import app

    for var, value in (("MODELOG_BROKER", settings.bootstrap_servers),
                       ("MODELOG_TOPIC_PREFIX", settings.topic_prefix),
                       ("MODELOG_DATA_DIR", str(settings.data_dir)), ("MODELOG_SECRET_KEY", KEY)):
        monkeypatch.setenv(var, value)
    cli_url = receiver.url()
    result = CliRunner().invoke(app, ["alerts", "subscribe", cli_url, "--secret", SECRET,
                                      "--allow-private"])
    assert result.exit_code == 0, result.output
    alert = _drift()
    _produce(settings, alert)

    # a worker with the wrong key fails that subscription only, with the reason
    wrong = deliver_once(dataclasses.replace(settings, secret_key="not the key"), **FAST)
    assert (wrong.delivered, wrong.failed) == (1, 2)
    assert receiver.at(signed) == [] and len(receiver.at(plain)) == 1
    with DeliveryLedger(settings.data_dir / "delivery.sqlite") as ledger:
        errors = {d.subscription_id: d.error for d in ledger.deliveries() if not d.ok}
    assert "MODELOG_SECRET_KEY is not the key" in (errors[sid] or "")
    # with the right key (a second worker, own ledger): requests a receiver can verify
    second = dataclasses.replace(settings, data_dir=settings.data_dir / "second")
    assert deliver_once(second, **FAST).delivered == 3
    for url in (signed, cli_url):
        [request] = receiver.at(url)
        assert verify_signature(SECRET, request["headers"]["Modelog-Signature"],
                                request["body"])

    records = _read(settings, Topics.from_settings(settings).subscriptions)
    assert len(records) >= 3 and not any(SECRET.encode() in r for r in records)
    for ledger_dir in (settings.data_dir, second.data_dir):
        assert SECRET.encode() not in (ledger_dir / "delivery.sqlite").read_bytes()
    projector = Projector(settings, serve=False)
    try:
        deadline, created = time.monotonic() + 30, 0
        while created < 3:
            assert time.monotonic() < deadline, f"only {created}/3 subscriptions projected"
            projector.project_once(timeout=0.2)
            created = projector.connection.execute(
                "SELECT count(*) FROM events WHERE type = 'AlertSubscriptionCreated'"
            ).fetchall()[0][0]
        rows = projector.connection.execute("SELECT * FROM events").fetchall()
    finally:
        projector.close()
    assert rows and not any(SECRET in str(r) for r in rows)
    assert sum("secret_ciphertext" in str(r) and "v1." in str(r) for r in rows) == 2
