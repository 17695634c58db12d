"""Field checks shared by the subject profiles and the CA settings.

Every check raises :class:`ca.errors.ProfileError` naming the field, so a caller that maps
IdP claims to a subject can tell the user exactly which claim is unusable.
"""

from __future__ import annotations

import re
import unicodedata

from ca.errors import ProfileError

# RFC 5280 Appendix A.1 upper bounds.
UB_COMMON_NAME = 64
UB_ORGANIZATION = 64
UB_SERIAL_NUMBER = 64
UB_PSEUDONYM = 128
UB_NAME = 32768
UB_EMAIL = 255

_COUNTRY = re.compile(r"[A-Z]{2}")
# X.680 §41.4 PrintableString repertoire.
_PRINTABLE = re.compile(r"[A-Za-z0-9 '()+,\-./:=?]+")
_EMAIL = re.compile(
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.\-]+@"
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}"
)
_URL = re.compile(r"https?://[A-Za-z0-9.\-]+(?::[0-9]{1,5})?(?:/[\x21-\x7e]*)?")


def country(field: str, value: object) -> str:
    """ISO 3166-1 alpha-2 code, upper case (RFC 5280 §4.1.2.4, X.520 countryName)."""
    if not isinstance(value, str) or not _COUNTRY.fullmatch(value):
        raise ProfileError(field, "must be two upper-case letters (ISO 3166-1 alpha-2)")
    return value


def text(field: str, value: object, upper_bound: int) -> str:
    """A non-empty DirectoryString without control characters or outer whitespace."""
    if not isinstance(value, str) or not value:
        raise ProfileError(field, "must be a non-empty string")
    if value != value.strip():
        raise ProfileError(field, "must not start or end with whitespace")
    if any(unicodedata.category(c) in ("Cc", "Cf", "Cs", "Co", "Cn") for c in value):
        raise ProfileError(field, "must not contain control or unassigned characters")
    if len(value) > upper_bound:
        raise ProfileError(field, f"must be at most {upper_bound} characters (RFC 5280)")
    return value


def printable(field: str, value: object, upper_bound: int) -> str:
    """A :func:`text` value limited to the PrintableString repertoire."""
    value = text(field, value, upper_bound)
    if not _PRINTABLE.fullmatch(value):
        raise ProfileError(field, "must use only PrintableString characters")
    return value


def pattern(field: str, value: str, regex: re.Pattern[str], description: str) -> str:
    """Require ``value`` to match ``regex`` completely."""
    if not regex.fullmatch(value):
        raise ProfileError(field, f"must be {description}")
    return value


def email(field: str, value: object) -> str:
    """An ASCII addr-spec usable as an rfc822Name (RFC 5280 §4.2.1.6)."""
    if not isinstance(value, str) or len(value) > UB_EMAIL or not _EMAIL.fullmatch(value):
        raise ProfileError(field, "must be an ASCII e-mail address (local@domain)")
    return value


def url(field: str, value: object, *, https_only: bool = False) -> str:
    """An absolute http(s) URL without spaces (RFC 5280 §4.2.2.1, EN 319 412-5 §4.3.4)."""
    if not isinstance(value, str) or not _URL.fullmatch(value):
        raise ProfileError(field, "must be an absolute http or https URL")
    if https_only and not value.startswith("https://"):
        raise ProfileError(field, "must be an https URL")
    return value
