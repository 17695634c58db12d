"""The CA certificates that `qes init` made, stored beside the records, and the generations
of the issuing CA and TSA that `qes ca rollover` and `qes ca switch` add (migration 0021)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import asyncpg
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from signer.storage.policy import LoggedAction, record_action
from signer.storage.records import PoolStore, guard, transaction

#: The roles whose key and certificate are rolled: the issuing CA and the built-in TSA; the
#: root is kept in the history when `qes init --force` replaces it.
ROLLED_ROLES = ("issuing", "tsa")
GENERATION_ROLES = ("root", *ROLLED_ROLES)


def generation_label(base: str, number: int) -> str:
    """The HSM key label of generation ``number`` of the key configured as ``base``: the
    configured label itself for the first, ``<base>-g<number>`` after it."""
    return base if number == 1 else f"{base}-g{number}"


@dataclass(frozen=True)
class Generation:
    """One generation of a role's key and certificate: ``pending`` (made, not yet used:
    ``issued_from`` None), ``current`` (issuing since ``issued_from``) or ``past`` (issued in
    ``[issued_from, issued_until]``; its certificate stays trusted for what it made)."""

    role: str
    number: int
    key_label: str
    certificate: x509.Certificate
    issued_from: datetime | None = None
    issued_until: datetime | None = None

    def __post_init__(self) -> None:
        if self.role not in GENERATION_ROLES:
            raise ValueError(f"role: one of {', '.join(GENERATION_ROLES)}")
        if self.number < 1:
            raise ValueError("number: from 1")
        if self.issued_until is not None and self.issued_from is None:
            raise ValueError("issued_until: only after issued_from")

    @property
    def state(self) -> Literal["pending", "current", "past"]:
        if self.issued_from is None:
            return "pending"
        return "current" if self.issued_until is None else "past"


class _NothingToSwitch(Exception):
    """No current or no pending generation: the switch is rolled back."""


def _generation(row: asyncpg.Record) -> Generation:
    return Generation(
        role=row["role"],
        number=row["generation"],
        key_label=row["key_label"],
        certificate=x509.load_der_x509_certificate(bytes(row["certificate"])),
        issued_from=row["issued_from"],
        issued_until=row["issued_until"],
    )


_INSERT = (
    "INSERT INTO ca_generations (role, generation, key_label, certificate, created_at,"
    " issued_from, issued_until) VALUES ($1,$2,$3,$4,$5,$6,$7)"
)
_INSERT_KNOWN = _INSERT + " ON CONFLICT (role, generation) DO NOTHING"


async def _insert(
    conn: asyncpg.Connection, g: Generation, at: datetime, *, known: bool = False
) -> None:
    """Store ``g``; a ``known`` one (already stored, or the first generation implied by
    ``ca_certificates``) is skipped when its number is taken, a new one never is."""
    await conn.execute(
        _INSERT_KNOWN if known else _INSERT,
        g.role,
        g.number,
        g.key_label,
        g.certificate.public_bytes(Encoding.DER),
        at,
        g.issued_from,
        g.issued_until,
    )


_SAVE = (
    "INSERT INTO ca_certificates (label, certificate, created_at) VALUES ($1,$2,$3)"
    " ON CONFLICT (label) DO UPDATE SET certificate=EXCLUDED.certificate,"
    " created_at=EXCLUDED.created_at"
)


class CaCertificateStore(PoolStore):
    async def load(self, label: str) -> x509.Certificate | None:
        async with guard("read CA certificate"):
            der = await self._pool.fetchval(
                "SELECT certificate FROM ca_certificates WHERE label=$1", label
            )
        return x509.load_der_x509_certificate(bytes(der)) if der is not None else None

    async def save(self, label: str, cert: x509.Certificate, at: datetime) -> None:
        async with guard("store CA certificate"):
            await self._pool.execute(
                _SAVE,
                label,
                cert.public_bytes(Encoding.DER),
                at,
            )

    async def save_logged(
        self, label: str, cert: x509.Certificate, at: datetime, logged: LoggedAction
    ) -> None:
        """:meth:`save` with the admin act that brought the certificate (a ceremony's import
        step, logged at most once), in one transaction."""
        async with transaction(self._pool, "store CA certificate") as conn:
            await conn.execute(
                _SAVE,
                label,
                cert.public_bytes(Encoding.DER),
                at,
            )
            await record_action(conn, logged, once=True)

    async def generations(self, role: str, base_label: str) -> tuple[Generation, ...]:
        """Every generation of ``role``, oldest first. Before the first rollover that is the
        one `qes init` made (``ca_certificates`` under ``base_label``), current since its
        certificate's notBefore; none before `qes init`."""
        async with guard("read CA generations"):
            rows = await self._pool.fetch(
                "SELECT * FROM ca_generations WHERE role=$1 ORDER BY generation", role
            )
        if rows:
            return tuple(map(_generation, rows))
        first = await self.load(base_label)
        if first is None:
            return ()
        return (Generation(role, 1, base_label, first, first.not_valid_before_utc),)

    async def current(self, role: str, base_label: str) -> Generation | None:
        """The generation of ``role`` that issues now, None before `qes init`."""
        found = [g for g in await self.generations(role, base_label) if g.state == "current"]
        return found[0] if found else None

    async def add_pending(
        self,
        known: tuple[Generation, ...],
        pending: Generation,
        logged: LoggedAction,
        at: datetime,
        *,
        step: LoggedAction | None = None,
    ) -> bool:
        """Store ``pending`` (with ``known``, the generations so far, when they are only the
        first one implied by ``ca_certificates``) and its admin act (and the ceremony ``step``
        that brought it, logged once), in one transaction. False, nothing written, when the
        role already has a pending generation."""
        async with guard("store CA generation"), self._pool.acquire() as conn:
            try:
                async with conn.transaction():
                    for g in known:
                        await _insert(conn, g, at, known=True)
                    await _insert(conn, pending, at)
                    await record_action(conn, logged)
                    if step is not None:
                        await record_action(conn, step, once=True)
            except asyncpg.UniqueViolationError:  # a pending one, or its number, taken
                return False
        return True

    async def switch(
        self, role: str, at: datetime, act: Callable[[Generation], LoggedAction]
    ) -> tuple[Generation, Generation] | None:
        """End the current generation of ``role`` and start its pending one at ``at``, and
        store the admin act ``act`` makes of the new current generation, in one transaction:
        (ended, started), or None (nothing changed) when there is no pending generation."""
        async with guard("switch CA generation"), self._pool.acquire() as conn:
            try:
                async with conn.transaction():
                    ended = await conn.fetchrow(
                        "UPDATE ca_generations SET issued_until=$2 WHERE role=$1"
                        " AND issued_from IS NOT NULL AND issued_until IS NULL RETURNING *",
                        role,
                        at,
                    )
                    started = await conn.fetchrow(
                        "UPDATE ca_generations SET issued_from=$2 WHERE role=$1"
                        " AND issued_from IS NULL RETURNING *",
                        role,
                        at,
                    )
                    if ended is None or started is None:
                        raise _NothingToSwitch
                    new = _generation(started)
                    await record_action(conn, act(new))
            except _NothingToSwitch:
                return None
        return _generation(ended), new

    async def replace(
        self, role: str, old: Generation | None, new: Generation, at: datetime
    ) -> None:
        """`qes init --force` made ``new`` (current from ``at``) in place of ``old``: once a
        role has a history, or when ``old`` existed, the current generation ends at ``at``,
        a pending one is dropped (its key stays in the HSM, unused), and ``new`` follows as
        the next generation; the earlier certificates stay in the trust bundle."""
        async with transaction(self._pool, "replace CA generation") as conn:
            if old is not None:
                await _insert(conn, old, at, known=True)
            top = await conn.fetchval(
                "SELECT max(generation) FROM ca_generations WHERE role=$1", role
            )
            if top is None:
                return
            await conn.execute(
                "UPDATE ca_generations SET issued_until=$2 WHERE role=$1"
                " AND issued_from IS NOT NULL AND issued_until IS NULL",
                role,
                at,
            )
            await conn.execute(
                "DELETE FROM ca_generations WHERE role=$1 AND issued_from IS NULL", role
            )
            next_one = Generation(role, top + 1, new.key_label, new.certificate, at)
            await _insert(conn, next_one, at)


@dataclass(frozen=True)
class StoredCrl:
    """A CRL of the root as imported from the ceremony (migration 0025)."""

    issuer_key_id: bytes
    number: int
    this_update: datetime
    next_update: datetime
    der: bytes


class RootCrlStore(PoolStore):
    """The root's CRLs, signed offline and imported (:mod:`signer.signing.ceremony`)."""

    async def add(self, crl: StoredCrl, at: datetime, logged: LoggedAction) -> bool:
        """Store ``crl`` with its ceremony step's admin act, in one transaction; False (nothing
        written) when that CRL number of that root is stored already."""
        async with transaction(self._pool, "store root CRL") as conn:
            added = await conn.fetchval(
                "INSERT INTO ca_root_crls (issuer_key_id, crl_number, this_update, next_update,"
                " crl, imported_at) VALUES ($1,$2,$3,$4,$5,$6) ON CONFLICT DO NOTHING"
                " RETURNING true",
                crl.issuer_key_id,
                crl.number,
                crl.this_update,
                crl.next_update,
                crl.der,
                at,
            )
            if added:
                await record_action(conn, logged, once=True)
        return bool(added)

    async def newest(self, issuer_key_id: bytes) -> StoredCrl | None:
        """The CRL with the highest number for the root with that key identifier."""
        async with guard("read root CRL"):
            row = await self._pool.fetchrow(
                "SELECT * FROM ca_root_crls WHERE issuer_key_id=$1"
                " ORDER BY crl_number DESC LIMIT 1",
                issuer_key_id,
            )
        if row is None:
            return None
        return StoredCrl(
            bytes(row["issuer_key_id"]),
            int(row["crl_number"]),
            row["this_update"],
            row["next_update"],
            bytes(row["crl"]),
        )
