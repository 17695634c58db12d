"""Every admin act is a log entry (issue 15 item 5): `qes client add|rotate|scope|revoke`,
`qes ca revoke`, `qes init --force` and a policy file taking effect in a running `qes serve`
each write an
``admin_actions`` row and a version-3 administrative-action entry (``ca.logentry`` kind 0x04);
the service integrates them under a signed checkpoint; `qes audit verify` rebuilds them (next
to a suspension logged as version 2) and names the entry when a row is altered or missing; the
audit UI lists them under "Administration", escaped.

Own database, key labels and IdP: a revoked TSA must not leak into the session's service."""

from __future__ import annotations

import asyncio
import getpass
import hashlib
import json
import re
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import asyncpg
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from jsonschema import Draft202012Validator

from ca.logentry import PrivacyKey, entry_fields, entry_version
from signer.storage.policy import AdminAction, LoggedAction, Target, record_action
from signer.translog.log import admin_entry
from tests.integration.api.test_policy_web_signing import login, qes
from tests.support.idp import DEMO_CLIENTS, DEMO_SECRETS, RunningIdp, start_idp, with_redirect_uri
from tests.support.pg import scratch_database
from tests.support.service import (
    TEST_LOG_PRIVACY_KEY,
    SignerProcess,
    free_port,
    own_ca_labels,
    qes_init,
    service_env,
)
from tests.support.softhsm import SoftHsmToken

KEY = PrivacyKey("k1", bytes.fromhex(TEST_LOG_PRIVACY_KEY))
ACTOR = "<b>ops-alice</b>"  # also checks that the audit UI escapes what it shows
POLICY_A = '[[rule]]\nname = "everyone"\n'
POLICY_B = '[[rule]]\nname = "everyone"\nmax_digests = 50\n'


@dataclass(frozen=True)
class Site:
    signer: SignerProcess
    idp: RunningIdp
    env: dict[str, str]
    database_url: str
    policy: Path
    log: Path


@pytest.fixture(scope="module")
def site(
    softhsm_token: SoftHsmToken, pg_admin: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Site]:
    work = tmp_path_factory.mktemp("admin-acts")
    port = free_port()
    clients = with_redirect_uri(
        DEMO_CLIENTS, "demo-audit-ui", f"http://127.0.0.1:{port}/audit/callback"
    )
    with scratch_database(pg_admin) as url, start_idp(work / "idp", clients=clients) as idp:
        env = service_env(
            token=softhsm_token, database_url=url, idp=idp, port=port, data_dir=work,
            **own_ca_labels("adm"),
            QES__AUDIT__UI_CLIENT_ID="demo-audit-ui", QES__AUDIT__UI_ISSUER="demo_people",
            QES_AUDIT_UI_CLIENT_SECRET=DEMO_SECRETS["demo-audit-ui"],
            QES__POLICY__FILE=f'"{work / "policy.toml"}"', QES__POLICY__RELOAD_SECONDS="0.2",
        )  # fmt: skip
        (work / "policy.toml").write_text(POLICY_A)
        env = {**env, "SOFTHSM2_CONF": softhsm_token.env()["SOFTHSM2_CONF"]}
        made = qes_init(env)
        assert made.returncode == 0, made.stderr
        signer = SignerProcess(env, port, work / "signer.log").start()
        try:
            yield Site(signer, idp, env, url, work / "policy.toml", work / "signer.log")
        finally:
            signer.stop()


def _ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, done.stderr
    return done.stdout


async def _old_suspension(conn: asyncpg.Connection) -> uuid.UUID:
    """A suspension logged as a version-2 entry, as before version 3 existed."""
    action = AdminAction(
        id=uuid.uuid4(), request_id="req-v2", action="suspend",
        target=Target("client", client_id="rp-legacy"), reason="before version 3",
        actor_issuer=None, actor_subject="cli:ops", acted_at=datetime.now(UTC),
    )  # fmt: skip
    entry = admin_entry(action).encode(KEY, version=2)
    async with conn.transaction():
        await record_action(conn, LoggedAction(action, entry))
    return action.id


async def _integrated(conn: asyncpg.Connection) -> None:
    """Until the service's publisher signed a checkpoint over every sequenced entry."""
    for _ in range(100):
        size = await conn.fetchval("SELECT size FROM log_state")
        signed = await conn.fetchval("SELECT coalesce(max(size), 0) FROM log_checkpoints")
        if signed >= size:
            return
        await asyncio.sleep(0.2)
    raise AssertionError("the log was not integrated")


async def _entries(conn: asyncpg.Connection) -> dict[str, bytes]:
    """The admin entries of the log by the action id they name."""
    rows = await conn.fetch("SELECT entry FROM log_entries WHERE kind = 'admin'")
    found = {}
    for row in rows:
        entry = bytes(row["entry"])
        found[dict(entry_fields(entry)[1])["record_id"].decode()] = entry
    return found


def _act(env: dict[str, str]) -> tuple[str, str, str]:
    """The client acts and the TSA revocation; the client id, its last secret, the serial."""
    back = "https://rp.example.com/back"
    added = _ok(
        qes(env, "client", "add", "Admin RP", "--redirect-uri", back, "--scope",
            "api:web-signing", "--actor", ACTOR)
    )  # fmt: skip
    client_id = added.split("client_id: ")[1].split()[0]
    rotated = _ok(qes(env, "client", "rotate", client_id, "--grace", "0", "--actor", ACTOR))
    secret = rotated.split("client_secret: ")[1].split()[0]
    _ok(qes(env, "client", "scope", client_id, "--scope", "*", "--actor", ACTOR))
    _ok(qes(env, "client", "revoke", client_id))  # the OS account acts
    revoked = _ok(qes(env, "ca", "revoke", "tsa", "--reason", "keyCompromise", "--actor", "ca-bob"))
    return client_id, secret, revoked.split("certificate ")[1].split()[0]


async def test_admin_acts_are_logged_verified_and_listed(site: Site) -> None:
    env = site.env
    client_id, secret, serial = await asyncio.to_thread(_act, env)
    conn = await asyncpg.connect(site.database_url)
    try:
        legacy = await _old_suspension(conn)
        rows = await conn.fetch(
            "SELECT * FROM admin_actions WHERE action LIKE 'client-%'"
            " OR action = 'certificate-revoke' ORDER BY acted_at"
        )
        tsa = x509.load_der_x509_certificate(
            await conn.fetchval("SELECT certificate FROM ca_revocations WHERE role = 'tsa'")
        )
        entries = await _entries(conn)
        await _integrated(conn)
        _check_rows(rows, entries, client_id, secret, serial, tsa)
        assert entry_version(entries[str(legacy)]) == 2
        clean = await asyncio.to_thread(qes, env, "audit", "verify", "-q")
        assert clean.returncode == 0, clean.stderr
        await _tampering_is_caught(env, conn, rows)
    finally:
        await conn.close()
    await _listed(site, client_id, serial)
    await _watched(site, serial)


def _check_rows(
    rows: list[asyncpg.Record],
    entries: dict[str, bytes],
    client_id: str,
    secret: str,
    serial: str,
    tsa: x509.Certificate,
) -> None:
    """Each act's row and entry: the act, the actor (committed), the target, the time; the
    client secret in neither."""
    acts = [(r["action"], r["detail"]) for r in rows]
    assert acts == [
        ("client-add", "api:web-signing format:* profile:*"),
        ("client-rotate", "grace=0"),
        ("client-scope", "*"),
        ("client-revoke", None),
        ("certificate-revoke", "tsa keyCompromise"),
    ]
    user = getpass.getuser()
    actors = [r["actor_subject"] for r in rows]
    assert actors == [f"cli:{ACTOR}"] * 3 + [f"cli:{user}", "cli:ca-bob"]
    assert {r["client_id"] for r in rows[:4]} == {client_id} and rows[4]["client_id"] is None
    assert rows[4]["certificate_serial"] == serial == format(tsa.serial_number, "x")
    assert bytes(rows[4]["target_sha256"]) == tsa.fingerprint(hashes.SHA256())
    for row in rows:
        entry = entries[str(row["id"])]
        fields = dict(entry_fields(entry)[1])
        assert entry_version(entry) == 3
        assert fields["action"] == row["action"].encode()
        assert fields["detail"] == (row["detail"] or "").encode()
        assert fields["actor_subject"] == KEY.commit(
            str(row["id"]), "actor_subject", row["actor_subject"].encode()
        )
        assert secret.encode() not in entry and secret not in str(dict(row))
        assert client_id.encode() not in entry  # committed, never in clear
    cert = dict(entry_fields(entries[str(rows[4]["id"])])[1])
    assert int.from_bytes(cert["certificate_serial"], "big") == tsa.serial_number
    assert cert["target_sha256"] == tsa.fingerprint(hashes.SHA256())


async def _tampering_is_caught(
    env: dict[str, str], conn: asyncpg.Connection, rows: list[asyncpg.Record]
) -> None:
    """An altered row no longer rebuilds its entry: `qes audit verify` fails and names the
    entry and the field (each change undone before the next)."""
    index = {
        bytes(r["entry"]): r["idx"]
        for r in await conn.fetch("SELECT idx, entry FROM log_entries WHERE kind = 'admin'")
    }
    by_id = {dict(entry_fields(e)[1])["record_id"].decode(): i for e, i in index.items()}
    tampers = [
        (rows[0], "detail", "'*'", "detail"),  # a wider scope than was granted
        (rows[1], "client_id", "'rp-someone-else'", "client_id"),
        (rows[2], "actor_subject", "'cli:mallory'", "actor_subject"),
        (rows[4], "certificate_serial", "'1'", "certificate_serial"),
        (rows[4], "target_sha256", "sha256('x'::bytea)", "target_sha256"),
    ]
    for row, column, value, field in tampers:
        await conn.execute(
            f"UPDATE admin_actions SET {column} = {value} WHERE id = $1",  # noqa: S608
            row["id"],
        )
        try:
            result = await asyncio.to_thread(qes, env, "audit", "verify", "-q")
        finally:
            await conn.execute(
                f"UPDATE admin_actions SET {column} = $2 WHERE id = $1",  # noqa: S608
                row["id"],
                row[column],
            )
        assert result.returncode == 1, result.stdout
        idx = by_id[str(row["id"])]
        assert f"entry {idx}: does not match admin action {row['id']}" in result.stderr
        assert f"(field {field} differs)" in result.stderr
    gone = rows[3]["id"]
    saved = await conn.fetchval(
        "DELETE FROM admin_actions WHERE id = $1 RETURNING row_to_json(admin_actions)::text", gone
    )
    try:
        result = await asyncio.to_thread(qes, env, "audit", "verify", "-q")
    finally:
        await conn.execute(
            "INSERT INTO admin_actions"
            " SELECT * FROM json_populate_record(NULL::admin_actions, $1::json)",
            saved,
        )
    assert json.loads(saved)["action"] == "client-revoke"
    assert result.returncode == 1 and f"admin action {gone} is missing" in result.stderr
    again = await asyncio.to_thread(qes, env, "audit", "verify", "-q")
    assert again.returncode == 0, again.stderr


async def _administration_page(site: Site) -> str:
    """The Administration page as an auditor (carol) sees it, with the CSP of the search."""
    jar = aiohttp.CookieJar(unsafe=True)
    url = site.signer.url
    async with aiohttp.ClientSession(cookie_jar=jar) as http:
        async with http.get(f"{url}/audit/login", allow_redirects=False) as r:
            assert r.status in (302, 303), await r.text()
            authorize = r.headers["Location"]
        callback = await login(
            http, site.idp, authorize, f"{url}/audit/callback", otp=False, user="carol"
        )
        async with http.get(callback, allow_redirects=False) as r:
            assert r.status in (302, 303), await r.text()
        async with http.get(f"{url}/audit") as r:
            search = await r.text()
            csp = r.headers["Content-Security-Policy"]
        assert 'href="/audit/administration"' in search
        async with http.get(f"{url}/audit/administration") as r:
            assert r.status == 200
            assert r.headers["Content-Security-Policy"] == csp
            page = await r.text()
        async with http.get(f"{url}/audit/administration?cursor=nonsense") as r:
            assert r.status == 400
    return page


async def _watched(site: Site, serial: str) -> None:
    """`qes audit watch`'s API shows the acts (outcome: the act) as its OpenAPI schema says."""
    token = await site.idp.client_token("demo-auditor", DEMO_SECRETS["demo-auditor"])
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{site.signer.url}/openapi.json") as r:
            document = await r.json()
        async with http.get(
            f"{site.signer.url}/api/v1/log/entries",
            params={"limit": "1000"},
            headers={"Authorization": f"Bearer {token}"},
        ) as r:
            assert r.status == 200, await r.text()
            body = await r.json()
    answer = document["paths"]["/api/v1/log/entries"]["get"]["responses"]["200"]
    schema = answer["content"]["application/json"]["schema"]
    assert list(Draft202012Validator(schema).iter_errors(body)) == []
    admin = {i["outcome"]: i for i in body["items"] if i["kind"] == "admin"}
    assert {"client-add", "client-rotate", "client-scope", "client-revoke"} <= set(admin)
    revoked = admin["certificate-revoke"]
    assert revoked["detail"] == "tsa keyCompromise" and int(revoked["serial"], 16) == int(
        serial, 16
    )


async def _listed(site: Site, client_id: str, serial: str) -> None:
    """The auditor sees the acts under Administration, escaped."""
    page = await _administration_page(site)
    for act in ("client-add", "client-rotate", "client-scope", "client-revoke"):
        assert f'data-action="{act}"' in page
    assert 'data-action="certificate-revoke"' in page and serial in page
    assert "tsa keyCompromise" in page and client_id in page and "cli:ca-bob" in page
    assert "cli:&lt;b&gt;ops-alice&lt;/b&gt;" in page and ACTOR not in page


async def test_init_force_is_logged_per_new_certificate(site: Site) -> None:
    """`qes init --force` replaces the root, issuing CA, TSA and OCSP responder keys: one
    ``ca-replace`` entry per new certificate (role, serial, SHA-256), rebuilt by `qes audit verify`;
    altering one is caught; listed under Administration."""
    done = await asyncio.to_thread(qes_init, site.env, "--force", "--actor", "ceremony-carl")
    assert done.returncode == 0, done.stderr
    assert "logged: 5 ca-replace admin act(s)" in done.stdout
    conn = await asyncpg.connect(site.database_url)
    try:
        rows = await conn.fetch(
            "SELECT * FROM admin_actions WHERE action = 'ca-replace' ORDER BY detail"
        )
        stored = {
            r["label"]: x509.load_der_x509_certificate(bytes(r["certificate"]))
            for r in await conn.fetch("SELECT * FROM ca_certificates")
        }
        entries = await _entries(conn)
        await _integrated(conn)
        roles = ["issuing", "ocsp-issuing", "ocsp-root", "root", "tsa"]
        assert [r["detail"] for r in rows] == roles
        labels = {"issuing": "adm-ca-[^@]+", "root": "adm-root-[^@]+", "tsa": "adm-tsa-[^@]+"}
        # one responder certificate per issuing CA generation, by its key identifier: the
        # new issuing CA's (the replaced one's stays stored, answering for nothing)
        (issuing,) = [c for k, c in stored.items() if re.fullmatch(labels["issuing"], k)]
        key_id = issuing.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
        labels |= {
            "ocsp-issuing": f"adm-ocsp-.+@issuing:{key_id.value.digest.hex()}",
            "ocsp-root": "adm-ocsp-.+@root",
        }
        for row in rows:
            assert row["actor_subject"] == "cli:ceremony-carl"
            label = labels[row["detail"]]
            cert = next(c for k, c in stored.items() if re.fullmatch(label, k))
            assert row["certificate_serial"] == format(cert.serial_number, "x")
            fields = dict(entry_fields(entries[str(row["id"])])[1])
            assert fields["target_sha256"] == cert.fingerprint(hashes.SHA256())
            assert int.from_bytes(fields["certificate_serial"], "big") == cert.serial_number
        clean = await asyncio.to_thread(qes, site.env, "audit", "verify", "-q")
        assert clean.returncode == 0, clean.stderr
        await conn.execute("UPDATE admin_actions SET detail = 'tsa' WHERE id = $1", rows[1]["id"])
        try:
            bad = await asyncio.to_thread(qes, site.env, "audit", "verify", "-q")
        finally:
            await conn.execute(
                "UPDATE admin_actions SET detail = $1 WHERE id = $2",
                rows[1]["detail"],
                rows[1]["id"],
            )
        assert bad.returncode == 1 and "(field detail differs)" in bad.stderr
    finally:
        await conn.close()
    page = await _administration_page(site)
    assert page.count('data-action="ca-replace"') == 5 and "cli:ceremony-carl" in page


async def _policy_rows(conn: asyncpg.Connection) -> list[str]:
    rows = await conn.fetch(
        "SELECT target_sha256 FROM admin_actions WHERE action = 'policy-load' ORDER BY acted_at"
    )
    return [bytes(r["target_sha256"]).hex() for r in rows]


async def _settled(conn: asyncpg.Connection, want: list[str]) -> list[str]:
    """The policy-load rows once they are ``want`` (a few reload intervals), else as they are."""
    for _ in range(50):
        have = await _policy_rows(conn)
        if have == want:
            break
        await asyncio.sleep(0.1)
    await asyncio.sleep(1.0)  # a few more reloads: nothing more may appear
    return await _policy_rows(conn)


async def test_each_policy_content_is_logged_once(site: Site) -> None:
    """The policy file the service started with, and each new content after it, is one
    ``policy-load`` entry with the SHA-256 the service logs as "policy loaded"; touching the
    file, writing an earlier content again or restarting the service adds none."""
    a = hashlib.sha256(POLICY_A.encode()).hexdigest()
    b = hashlib.sha256(POLICY_B.encode()).hexdigest()
    conn = await asyncpg.connect(site.database_url)
    try:
        assert await _settled(conn, [a]) == [a]
        assert a in site.log.read_text()  # the service's "policy loaded" names the same SHA-256
        site.policy.write_text(POLICY_A)  # touched: same bytes
        assert await _settled(conn, [a]) == [a]
        site.policy.write_text(POLICY_B)
        assert await _settled(conn, [a, b]) == [a, b]
        site.policy.write_text(POLICY_A)  # back to a content logged before
        await asyncio.to_thread(site.signer.stop)
        await asyncio.to_thread(site.signer.start)  # a restart reads A again
        assert await _settled(conn, [a, b]) == [a, b]
        row = await conn.fetchrow(
            "SELECT * FROM admin_actions WHERE action = 'policy-load' AND target_sha256 = $1",
            bytes.fromhex(b),
        )
        assert row["detail"] == "rules=1" and row["actor_subject"] == "service:policy-file"
        entry = (await _entries(conn))[str(row["id"])]
        assert dict(entry_fields(entry)[1])["target_sha256"] == bytes.fromhex(b)
        await _integrated(conn)
        clean = await asyncio.to_thread(qes, site.env, "audit", "verify", "-q")
        assert clean.returncode == 0, clean.stderr
        await conn.execute(
            "UPDATE admin_actions SET target_sha256 = $2 WHERE id = $1", row["id"], bytes(32)
        )
        try:
            bad = await asyncio.to_thread(qes, site.env, "audit", "verify", "-q")
        finally:
            await conn.execute(
                "UPDATE admin_actions SET target_sha256 = $2 WHERE id = $1",
                row["id"],
                bytes.fromhex(b),
            )
        assert bad.returncode == 1 and "(field target_sha256 differs)" in bad.stderr
    finally:
        await conn.close()
    page = await _administration_page(site)
    assert page.count('data-action="policy-load"') == 2 and f"SHA-256 {b}" in page


async def test_a_purge_is_logged_with_its_cut_off_and_counts(site: Site) -> None:
    """`qes audit purge` is an admin act: one ``purge`` entry (scope all, the operator, the
    cut-off and what was erased), written in the purge's transaction, rebuilt by `qes audit
    verify` (altering its counts is caught) and listed under Administration."""
    before = "2001-02-03"  # outside any retention: nothing to erase, the act is still logged
    done = await asyncio.to_thread(
        qes, site.env, "audit", "purge", "--before", before, "--actor", "purger-pia"
    )
    assert done.returncode == 0, done.stderr
    assert "the purge is one more (admin action)" in done.stdout
    conn = await asyncpg.connect(site.database_url)
    try:
        (row,) = await conn.fetch("SELECT * FROM admin_actions WHERE action = 'purge'")
        assert (row["scope"], row["actor_subject"]) == ("all", "cli:purger-pia")
        assert row["detail"] == (
            "before=2001-02-03T00:00:00+00:00 records=0 approval_requests=0"
            " approval_decisions=0 admin_actions=0 web_requests=0"
        )
        await _integrated(conn)
        clean = await asyncio.to_thread(qes, site.env, "audit", "verify", "-q")
        assert clean.returncode == 0, clean.stderr
        altered = row["detail"].replace("records=0", "records=9")
        await conn.execute("UPDATE admin_actions SET detail = $1 WHERE id = $2", altered, row["id"])
        try:
            bad = await asyncio.to_thread(qes, site.env, "audit", "verify", "-q")
        finally:
            await conn.execute(
                "UPDATE admin_actions SET detail = $1 WHERE id = $2", row["detail"], row["id"]
            )
        assert bad.returncode == 1 and "(field detail differs)" in bad.stderr
    finally:
        await conn.close()
    page = await _administration_page(site)
    assert 'data-action="purge"' in page and "cli:purger-pia" in page


async def test_a_ceremony_transcript_is_logged_once_per_step(site: Site, tmp_path: Path) -> None:
    """Issue 15 items 1 and 5: `qes ca transcript import` logs each step of a key-ceremony
    transcript as one ``ca-ceremony`` entry (the step's actor and time, its digest as target),
    importing again or a grown transcript adds only new steps (a witness's attestation among
    them), `qes audit verify` rebuilds them, the Administration page lists them (the
    attestation as such); a changed transcript is refused in one line."""
    from ca.ceremony import Witness
    from signer.translog.ceremony import TranscriptFile, witness_attest

    path, at = tmp_path / "ceremony.jsonl", datetime.now(UTC)
    transcript = TranscriptFile(path)
    transcript.append("root-create", "ca-alice", at, {"subject": "CN=Root", "token": "qes-root"})
    transcript.append("witness", "wit-walt", at, {"statement": "token sealed, bag 17"})
    sheet = _ok(qes(site.env, "ca", "transcript", "show", str(path), "--witness", "Walt"))
    head = transcript.read()[-1].digest.hex()
    assert f"Head of the transcript (SHA-256): {head}" in sheet and "Name: Walt" in sheet
    first = _ok(qes(site.env, "ca", "transcript", "import", str(path)))
    assert first.startswith("logged 2 ceremony step(s), 0 logged before")
    crl = transcript.append("crl-sign", "ca-alice", at, {"crl_number": "1"})
    witness_attest(transcript, Witness("Walt", "internal auditor", "walt"), crl.digest, at)
    again = _ok(qes(site.env, "ca", "transcript", "import", str(path)))
    assert again.startswith("logged 2 ceremony step(s), 2 logged before")
    steps = transcript.read()
    conn = await asyncpg.connect(site.database_url)
    try:
        rows = await conn.fetch(  # `qes init` logged its own ceremony's steps before
            "SELECT * FROM admin_actions WHERE action = 'ca-ceremony'"
            " AND target_sha256 = ANY($1::bytea[]) ORDER BY detail",
            [s.digest for s in steps],
        )
        assert [(r["detail"], r["actor_subject"], bytes(r["target_sha256"])) for r in rows] == [
            ("crl-sign #3", "cli:ca-alice", steps[2].digest),
            ("root-create #1", "cli:ca-alice", steps[0].digest),
            ("witness #2", "cli:wit-walt", steps[1].digest),
            ("witness-attest #4", "cli:Walt", steps[3].digest),
        ]
        assert {r["acted_at"] for r in rows} == {at.replace(microsecond=0)}
        await _integrated(conn)
        clean = await asyncio.to_thread(qes, site.env, "audit", "verify", "-q")
        assert clean.returncode == 0, clean.stderr
    finally:
        await conn.close()
    path.write_bytes(path.read_bytes().replace(b"bag 17", b"bag 18"))
    for command in ("show", "import"):
        bad = qes(site.env, "ca", "transcript", command, str(path))
        assert bad.returncode == 1 and bad.stdout == ""
        assert bad.stderr.strip() == f"qes: {path}: transcript step 3: does not follow step 2"
    page = await _administration_page(site)
    assert 'data-action="ca-ceremony"' in page
    assert all(f"SHA-256 {step.digest.hex()}" in page for step in steps)
    assert "ceremony step (a witness's attestation) <span" in page
    assert page.count("a witness's attestation") == 1 and ">witness-attest #4<" in page
