"""Secrets out of text: every form a key may take in a message, and its masking. Used by
the log processor, the CLI's last word and the API client; redact first, then cut."""

from __future__ import annotations

import json
from collections.abc import Iterable
from urllib.parse import quote, quote_plus

MIN_SECRET_LEN = 4
PASSWORD_PARAMS = ("password", "passwd", "pwd")


def secret_forms(secrets: Iterable[str]) -> list[str]:
    """Each secret as written, URL-encoded, and escaped as repr() and JSON escape it
    (a message may quote a value either way), longest first, for redaction."""
    forms = set()
    for s in secrets:
        # A secret of a few characters is no secret (and would mask every such letter
        # in every message); real keys and passwords are far longer.
        if len(s) >= MIN_SECRET_LEN:
            forms.update({s, quote(s, safe=""), quote_plus(s), repr(s)[1:-1],
                          json.dumps(s)[1:-1], json.dumps(s, ensure_ascii=False)[1:-1]})
    return sorted((f for f in forms if f), key=len, reverse=True)


def redact(text: str, forms: Iterable[str]) -> str:
    for form in forms:
        if form in text:
            text = text.replace(form, "***")
    return text


def url_secrets(url: str) -> list[str]:
    """The password of a database URL, from its userinfo or a query parameter."""
    if not url:
        return []
    try:
        from sqlalchemy.engine import make_url  # here: config needs it only for a URL
        parsed = make_url(url)
    except Exception:
        return []
    found = [parsed.password] if parsed.password else []
    for name, value in parsed.query.items():
        if name.lower() in PASSWORD_PARAMS:
            found += [value] if isinstance(value, str) else list(value)
    return [str(v) for v in found if v]
