"""The signer's error hierarchy.

Every error the service raises on purpose derives from :class:`SignerError`. Each kind has a
stable ``slug`` that the HTTP edge turns into an RFC 9457 problem ``type`` URI and a status code;
the message given to the client is the class's fixed ``title``, never the exception text, which
goes to the log only (RFC 9457 §3.1: ``title`` SHOULD NOT change between occurrences).
"""

from __future__ import annotations


class SignerError(Exception):
    """Base of all errors raised by the signer on purpose."""

    slug = "internal-error"
    title = "Internal error"
    status = 500


class ConfigError(SignerError):
    """A setting is missing or invalid; the message names the key."""

    slug = "configuration-error"
    title = "Service misconfigured"
    status = 500


class HsmUnavailable(SignerError):
    """The PKCS#11 module, token or session pool cannot be used right now."""

    slug = "hsm-unavailable"
    title = "Signing device unavailable"
    status = 503


class KeyPolicyViolation(SignerError):
    """A generated key does not carry the attributes that make it sole-control evidence."""

    slug = "key-policy-violation"
    title = "Generated key failed its attribute checks"
    status = 503


class KeyNotDestroyed(SignerError):
    """An ephemeral key could not be destroyed, or still resolves after destruction."""

    slug = "key-destruction-failed"
    title = "Ephemeral key destruction could not be confirmed"
    status = 503


class DatabaseUnavailable(SignerError):
    """PostgreSQL cannot be reached or refused the write; nothing is released."""

    slug = "database-unavailable"
    title = "Record store unavailable"
    status = 503


class RequestError(SignerError):
    """Base for errors caused by the client's request (4xx)."""

    slug = "bad-request"
    title = "Bad request"
    status = 400
    #: A fixed, input-free ``detail`` for the client, e.g. a JSON pointer to the refused field.
    pointer_detail: str | None = None


class LogBehindCheckpoint(SignerError):
    """The database's transparency log does not extend the newest published checkpoint (kept
    outside the database: ``log.anchor_file``): restored from an old backup, or a failover lost
    entries. Nothing is signed or published until the operator decides (``qes audit anchor``)."""

    slug = "log-behind-checkpoint"
    title = "The signing log is behind its published checkpoint"
    status = 503
