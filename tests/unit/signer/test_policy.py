"""The signing-policy file: parsing, line-numbered errors, rule matching, reload."""

from __future__ import annotations

import os
import textwrap
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
import structlog

from ca.logentry import PrivacyKey
from idp_adapter.principal import Principal
from signer.policy.file import PolicyFile
from signer.policy.rules import (
    AcrRequired,
    ApprovalRequirement,
    PolicyDenied,
    PolicyFileError,
    PolicyLevelNotAllowed,
    PolicyProfileNotAllowed,
    PolicyTooManyDigests,
    RateLimit,
    parse_policy,
)

ISS = "https://idp.example.com"
KEY_FOR_TESTS = PrivacyKey("test", bytes(32))
OTHER = "https://other.example.com"


def person(**changes: object) -> Principal:
    base = Principal(
        issuer=ISS,
        issuer_name="people",
        subject="alice",
        client_id="rp-1",
        subject_type="natural",
        attributes={"common_name": "Alice"},
        profiles=("qes", "qualified", "advanced"),
        default_profile="advanced",
        roles=frozenset(),
        token_id=None,
        expires_at=datetime(2030, 1, 1, tzinfo=UTC),
        email="alice@example.com",
    )
    return replace(base, **changes)  # type: ignore[arg-type]


POLICY = textwrap.dedent(
    f"""\
    # first match wins
    [[rule]]
    name = "blocked"
    issuers = ["{ISS}"]
    subjects = ["mallory"]
    allow = false

    [[rule]]
    name = "treasury"
    groups = ["treasury"]
    profiles = ["qualified"]
    levels = ["qualified"]
    approvals = {{ required = 2, group = "treasurers" }}

    [[rule]]
    name = "bots"
    roles = ["signing-bot"]
    max_digests = 5
    rate_limit = {{ per_minute = 2, per_day = 10 }}

    [[rule]]
    name = "payroll-app"
    clients = ["payroll"]
    acr = "urn:example:high"

    [[rule]]
    name = "staff"
    email_domains = ["Example.COM"]
    profiles = ["advanced", "qualified"]

    [[rule]]
    name = "partner"
    issuers = ["{OTHER}"]

    [approver_groups.treasurers]
    members = [
      {{ issuer = "{ISS}", subject = "bob" }},
      {{ issuer = "{ISS}", subject = "carol" }},
    ]
    roles = ["treasurer"]
    issuers = ["{ISS}"]
    """
)


def test_rule_kinds_match_first_match_wins() -> None:
    policy = parse_policy(POLICY)
    # subject (with issuer) + allow = false
    with pytest.raises(PolicyDenied):
        policy.decide(person(subject="mallory", groups=frozenset({"treasury"})), client_id=None)
    # the same subject at another issuer is someone else
    assert (
        policy.decide(person(issuer=OTHER, subject="mallory", email=None), client_id=None).rule
        == "partner"
    )
    # group claim
    d = policy.decide(person(groups=frozenset({"treasury"})), client_id=None)
    assert d.rule == "treasury"
    assert d.approvals == ApprovalRequirement(required=2, group="treasurers")
    assert d.profiles == frozenset({"qualified"}) and d.levels == frozenset({"qualified"})
    # role claim
    d = policy.decide(person(roles=frozenset({"signing-bot"})), client_id=None)
    assert (d.rule, d.max_digests, d.rate_limit) == ("bots", 5, RateLimit(2, 10))
    # RP client (before the e-mail rule)
    d = policy.decide(person(), client_id="payroll")
    assert (d.rule, d.required_acr) == ("payroll-app", "urn:example:high")
    # e-mail domain, case-insensitive
    assert policy.decide(person(email="Alice@EXAMPLE.com"), client_id="x").rule == "staff"
    # issuer
    assert policy.decide(person(issuer=OTHER, email=None), client_id=None).rule == "partner"
    # nothing matches: refused
    with pytest.raises(PolicyDenied):
        policy.decide(person(email="eve@example.org"), client_id=None)
    with pytest.raises(PolicyDenied):
        policy.decide(person(email=None), client_id=None)


def test_decision_checks_profile_level_acr_and_count() -> None:
    policy = parse_policy(POLICY)
    staff = policy.decide(person(), client_id=None)
    staff.check(person(), profile="advanced", digests=1000)
    with pytest.raises(PolicyProfileNotAllowed):
        staff.check(person(), profile="qes", digests=1)
    bots = policy.decide(person(roles=frozenset({"signing-bot"})), client_id=None)
    bots.check(person(), profile="advanced", digests=5)
    with pytest.raises(PolicyTooManyDigests):
        bots.check(person(), profile="advanced", digests=6)
    app = policy.decide(person(), client_id="payroll")
    with pytest.raises(AcrRequired):
        app.check(person(acr="urn:example:low"), profile="advanced", digests=1)
    app.check(person(acr="urn:example:high"), profile="advanced", digests=1)
    levels = parse_policy('[[rule]]\nname = "a"\nlevels = ["advanced"]\n')
    d = levels.decide(person(), client_id=None)
    with pytest.raises(PolicyLevelNotAllowed):
        d.check(person(), profile="qes", digests=1)


def test_approver_groups_by_identity_and_by_role() -> None:
    policy = parse_policy(POLICY)
    assert policy.is_member("treasurers", person(subject="bob"))
    assert policy.is_member("treasurers", person(subject="dave", roles=frozenset({"treasurer"})))
    # the role counts only from the listed issuers
    assert not policy.is_member(
        "treasurers", person(issuer=OTHER, subject="dave", roles=frozenset({"treasurer"}))
    )
    assert not policy.is_member("treasurers", person(subject="dave"))
    assert not policy.is_member("nobody", person(subject="bob"))


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        ('[[rule]]\nname = "a"\nprofiles = ["qes"\n', 3, "end of the file"),
        ('[[rule]]\nname = "a"\nprofiles = = 1\n', 3, "column"),
        ('[[rule]]\nname = "a"\n\n[[rule]]\nname = "b"\nprofiles = ["gold"]\n', 6, "'gold'"),
        ('[[rule]]\nname = "a"\nmax_digests = 0\n', 3, "max_digests"),
        ('[[rule]]\nname = "a"\nrate_limit = { per_minute = -1 }\n', 3, "per_minute"),
        (
            '[[rule]]\nname = "a"\n[rule.rate_limit]\nper_minute = 5\nper_hour = 9\n',
            5,
            "per_hour",
        ),
        ('[[rule]]\nname = "a"\napprovals = { required = 2, group = "x" }\n', 3, "'x'"),
        ('[[rule]]\nname = "a"\nsubjects = ["alice"]\n', 3, "issuers"),
        ('[[rule]]\nname = "a"\ncolour = "red"\n', 3, "colour"),
        ('[[rule]]\nname = "a"\n\n[[rule]]\nname = "b"\nroles = ["x"]\n', 4, "never match"),
        ('[[rule]]\nname = "a"\nroles = ["x"]\n[[rule]]\nname = "a"\n', 5, "twice"),
        ("[[rule]]\nroles = []\n", 1, "name"),
        ("x = 1\n", 1, "unknown key 'x'"),
        (
            '[[rule]]\nname = "a"\n\n[approver_groups.g]\nmembers = [\n  { issuer = "i" },\n]\n',
            5,
            "members[0]",
        ),
        (
            '[[rule]]\nname = "a"\napprovals = { required = 3, group = "g" }\n'
            '[approver_groups.g]\nmembers = [{ issuer = "i", subject = "s" }]\n',
            3,
            "only 1",
        ),
    ],
)
def test_bad_file_names_the_line(text: str, line: int, fragment: str) -> None:
    with pytest.raises(PolicyFileError) as info:
        parse_policy(text)
    assert info.value.line == line, str(info.value)
    assert str(info.value).startswith(f"line {line}: ")
    assert fragment in str(info.value)


def test_empty_file_is_refused() -> None:
    with pytest.raises(PolicyFileError, match="no \\[\\[rule\\]\\]"):
        parse_policy("# nothing\n")


def test_reload_swaps_good_files_and_keeps_the_old_one(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text('[[rule]]\nname = "first"\n')
    holder = PolicyFile(path)
    holder.load()
    assert holder.current.decide(person(), client_id=None).rule == "first"
    assert holder.check() is False  # unchanged

    def write(text: str) -> None:
        path.write_text(text)
        st = path.stat()  # a different mtime even within the clock's granularity
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))

    with structlog.testing.capture_logs() as logs:
        write('[[rule]]\nname = "second"\n')
        assert holder.check() is True
        assert holder.current.decide(person(), client_id=None).rule == "second"
        write('[[rule]]\nname = "third"\nlevels = ["platinum"]\n')
        assert holder.check() is False
        assert holder.current.decide(person(), client_id=None).rule == "second"
        path.unlink()
        assert holder.check() is False
        assert holder.current.decide(person(), client_id=None).rule == "second"
    events = [e["event"] for e in logs]
    assert events[0] == "policy loaded"
    assert events[1].startswith("policy rejected: line 3: ")
    assert events[2].startswith("policy rejected: ") and "missing" in events[2]


def test_qes_policy_check(tmp_path: Path) -> None:
    import subprocess
    import sys

    good, bad = tmp_path / "good.toml", tmp_path / "bad.toml"
    good.write_text(POLICY)
    bad.write_text(POLICY.replace("max_digests = 5", 'max_digests = "5"'))
    root = Path(__file__).resolve().parents[3]

    def qes(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "signer", *args], cwd=root, capture_output=True, text=True
        )

    ok = qes("policy", "check", str(good))
    assert ok.returncode == 0, ok.stderr
    assert "6 rules, 1 approver groups" in ok.stdout
    failed = qes("policy", "check", str(bad))
    assert failed.returncode == 1
    line = POLICY.splitlines().index("max_digests = 5") + 1
    assert failed.stderr.strip().splitlines() == [
        f"qes: {bad}: line {line}: max_digests must be an integer between 1 and 100000"
    ]


def test_acr_levels_order_the_required_acr() -> None:
    text = 'acr_levels = ["pwd", "mfa", "hardware"]\n[[rule]]\nname = "strong"\nacr = "mfa"\n'
    decision = parse_policy(text).decide(person(), client_id=None)
    assert decision.acr_accepted == ("mfa", "hardware")
    for acr in ("mfa", "hardware"):
        decision.check(person(acr=acr), profile="qes", digests=1)
    for acr in ("pwd", None):
        with pytest.raises(AcrRequired):
            decision.check(person(acr=acr), profile="qes", digests=1)
    with pytest.raises(PolicyFileError, match="line 3: acr 'otp' is not one of acr_levels"):
        parse_policy('acr_levels = ["pwd"]\n[[rule]]\nacr = "otp"\nname = "x"\n')
    with pytest.raises(PolicyFileError, match="line 1: acr_levels must not repeat"):
        parse_policy('acr_levels = ["pwd", "pwd"]\n[[rule]]\nname = "x"\n')


def test_policy_settings(tmp_path: Path) -> None:
    from signer.errors import ConfigError
    from signer.settings.config import load_settings
    from tests.support.service import DEV_CONFIG

    env = {"QES_HSM_PIN": "1234"}
    plain = load_settings(DEV_CONFIG, env=env).policy  # the dev policy (approvals demo)
    dev_policy = (DEV_CONFIG.parent / "policy.toml").resolve()
    assert (plain.file, plain.reload_seconds, plain.admin_role) == (dev_policy, 1.0, "qes-admin")
    set_ = load_settings(
        DEV_CONFIG,
        env={**env, "QES__POLICY__FILE": "policy.example.toml", "QES__POLICY__ADMIN_ROLE": "ops"},
    ).policy
    assert set_.file == (DEV_CONFIG.parent / "policy.example.toml").resolve()  # next to it
    assert set_.admin_role == "ops"
    for key, value, why in [
        ("RELOAD_SECONDS", "0", "policy.reload_seconds: must be between 0.1 and 60"),
        ("ADMIN_ROLE", '" "', "policy.admin_role: must not be empty"),
        ("COLOUR", "1", "policy.colour: unknown setting"),
    ]:
        with pytest.raises(ConfigError) as info:
            load_settings(DEV_CONFIG, env={**env, f"QES__POLICY__{key}": value})
        assert str(info.value) == why


def test_the_shipped_example_policy_is_valid() -> None:
    from tests.support.service import DEV_CONFIG

    policy = parse_policy((DEV_CONFIG.parent / "policy.example.toml").read_text())
    assert [r.name for r in policy.rules] == ["demo-batch", "treasury", "people"]
    alice = person(issuer="http://127.0.0.1:9400")
    assert policy.decide(alice, client_id="demo-web").rule == "people"
    treasurer = replace(alice, groups=frozenset({"treasury"}))
    assert policy.decide(treasurer, client_id="demo-web").required_acr is not None
    auditor = replace(alice, roles=frozenset({"qes-auditor"}))
    assert policy.is_member("auditors", auditor) and not policy.is_member("auditors", alice)


async def test_no_rate_limit_rule_no_database_round_trip(tmp_path: Path) -> None:
    """The hot path (issue 2's benchmark): suspensions and the decision are in memory; only a
    rule with a rate limit reaches the store."""
    from datetime import UTC, datetime
    from typing import Any

    from signer.policy.enforcement import Gate, Suspensions

    class Store:  # stands in for PolicyStore: counts the round trips it is asked for
        calls = 0

        async def count(self, *args: object) -> None:
            Store.calls += 1

    path = tmp_path / "policy.toml"
    path.write_text(POLICY)
    holder = PolicyFile(path)
    holder.load()
    store: Any = Store()
    now = lambda: datetime.now(UTC)  # noqa: E731
    gate = Gate(
        suspensions=Suspensions(store, KEY_FOR_TESTS, now), policy=holder, store=store, clock=now
    )
    staff = person()  # rule "staff": no rate limit
    await gate.count(staff, gate.check(staff, client_id=None, profile="advanced", digests=1))
    assert Store.calls == 0
    bot = person(roles=frozenset({"signing-bot"}))  # rule "bots": a rate limit
    await gate.count(bot, gate.check(bot, client_id=None, profile="advanced", digests=1))
    assert Store.calls == 1
