"""Central-database URLs parsed without SQLAlchemy, and every text that shows one without its password.

``postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE[?OPTIONS]`` (also ``postgres://`` and
``postgresql+psycopg://``) or ``sqlite:///PATH``. A password may hold anything: ``/``, ``@``,
``?``, blanks, percent-escapes; the user information runs from ``://`` to the *last* ``@``.
libpq's ``password=`` and ``passfile=`` options are secrets too. SQLAlchemy's ``make_url`` reads
some of these wrongly (an ``@`` in the password), so the URL handed to it is built here from the
parts (:meth:`DatabaseUrl.sqlalchemy_url`).

What is shown or stored is the *target*: user, host, port and database, never a password
(:attr:`DatabaseUrl.target`, :attr:`DatabaseUrl.where`). A text that cannot be parsed is shown
with everything between ``://`` and its last ``@`` hidden, and every ``password=`` and
``passfile=`` value (:func:`shown`); :func:`redact` hides what looks like a password in any text.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Optional
from urllib.parse import unquote

ALLOWED_URLS = "postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE (or postgresql+psycopg://...), sqlite:///PATH"
#: libpq's connection options whose values are secrets.
SECRET_OPTIONS = ("password", "passfile")
HIDDEN = "***"

_SCHEME = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://(?P<rest>.*)$", re.DOTALL)
_POSTGRES = ("postgresql", "postgres", "postgresql+psycopg")
_ANY_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
_SECRET_OPTION = re.compile(r"(?i)(?<![A-Za-z0-9_])(password|passfile)(\s*=\s*)[^&\s]*")
_USER = re.compile(r"[A-Za-z0-9._%+-]*")
_HOST = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[^\s:/?#\[\]@]+)$")


@dataclass(frozen=True)
class DatabaseUrl:
    """A parsed central-database URL (``kind``: ``postgresql`` or ``sqlite``)."""

    kind: str
    user: str = ""  # as written (percent-escapes kept)
    password: Optional[str] = None  # decoded, from the user information or the password option
    host: str = ""
    port: Optional[int] = None
    database: str = ""  # as written; of SQLite, the file's path
    options: tuple[tuple[str, str], ...] = ()  # decoded, the secret ones (passfile) included
    secrets: tuple[str, ...] = ()  # every form of every secret the text holds, longest first
    shown: str = ""  # the URL as written, its secrets replaced by ***

    @property
    def target(self) -> str:
        """The database without any secret: ``postgresql://USER@HOST:PORT/DATABASE`` (or the SQLite URL)."""
        if self.kind == "sqlite":
            return f"sqlite:///{self.database}"
        user = f"{self.user}@" if self.user else ""
        port = f":{self.port}" if self.port is not None else ""
        return f"postgresql://{user}{self.host}{port}/{self.database}"

    @property
    def where(self) -> str:
        """``HOST[:PORT]/DATABASE``, or the SQLite file: for a status line."""
        if self.kind == "sqlite":
            return self.database
        return f"{self.host}{f':{self.port}' if self.port is not None else ''}/{self.database}"

    def same_target(self, other: DatabaseUrl) -> bool:
        """Whether both name one database as one user (what a password found elsewhere may serve)."""
        return self.target == other.target

    def sqlalchemy_url(self) -> Any:
        """SQLAlchemy's URL of this database, built from the parts (SQLAlchemy hides its password when shown)."""
        from sqlalchemy.engine import URL

        if self.kind == "sqlite":
            return URL.create("sqlite", database=self.database)
        return URL.create("postgresql+psycopg", username=unquote(self.user) or None, password=self.password,
                          host=self.host.strip("[]"), port=self.port, database=unquote(self.database),
                          query=dict(self.options))

    def hide(self, text: str) -> str:
        """``text`` with every form of this URL's secrets replaced by ``***`` (then :func:`redact`)."""
        for secret in self.secrets:
            text = text.replace(secret, HIDDEN)
        return redact(text)


def parse(url: Any) -> DatabaseUrl:
    """The parts of a central-database URL; ``ValueError`` (the URL shown without secrets) if it is not one."""
    if not isinstance(url, str) or not url.strip():
        raise ValueError(f"expected a database URL; allowed: {ALLOWED_URLS}")
    match = _SCHEME.match(url.strip())
    if match is None or match["scheme"].lower() not in (*_POSTGRES, "sqlite"):
        raise ValueError(f"{_hidden_anyway(url)!r} is not a supported database URL; allowed: {ALLOWED_URLS}")
    rest = match["rest"]
    if match["scheme"].lower() == "sqlite":
        if not rest.startswith("/") or rest in ("/", "//") or "@" in rest:
            raise ValueError(f"{_hidden_anyway(url)!r}: a SQLite URL names a file: sqlite:///relative/path or "
                             "sqlite:////absolute/path")
        return DatabaseUrl("sqlite", database=rest[1:], shown=url.strip())
    userinfo, at, location = rest.rpartition("@")
    location, question, query = location.partition("?")
    authority, slash, database = location.partition("/")
    host, port = _host_and_port(authority, url)
    if not host or not slash or not database:
        raise ValueError(f"{_hidden_anyway(url)!r}: expected postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE "
                         "(a host and a database name)")
    user, colon, written = userinfo.partition(":")
    password, secrets = (unquote(written), [written, unquote(written)]) if colon else (None, [])
    options, parts = [], []
    for part in query.split("&") if question else []:
        key, _, value = part.partition("=")
        name = unquote(key).strip()
        if name.lower() in SECRET_OPTIONS:
            secrets += [value, unquote(value)]
            parts.append(f"{key}={HIDDEN}")
            if name.lower() == "password":
                password = unquote(value)
                continue
        else:
            parts.append(part)
        if name:
            options.append((name, unquote(value)))
    userpart = f"{user}{':' + HIDDEN if colon else ''}{at}"
    return DatabaseUrl("postgresql", user=user, password=password, host=host, port=port, database=database,
                       options=tuple(options),
                       secrets=tuple(sorted({secret for secret in secrets if secret}, key=len, reverse=True)),
                       shown=f"{match['scheme']}://{userpart}{location}{question}{'&'.join(parts)}")


def _host_and_port(authority: str, url: str) -> tuple[str, Optional[int]]:
    host, colon, port = authority.rpartition(":") if ":" in authority.rpartition("]")[2] else (authority, "", "")
    if colon and not (port.isdigit() and 0 < int(port) < 65536):
        raise ValueError(f"{_hidden_anyway(url)!r}: the port must be a number, got {port[:20]!r} (1 to 65535)")
    if host and not _HOST.match(host):
        raise ValueError(f"{_hidden_anyway(url)!r}: {host[:40]!r} is not a host name")
    return host, int(port) if colon else None


def shown(url: Any) -> str:
    """``url`` as a message may show it: without its password and secret options, parsed or not."""
    try:
        return parse(url).shown
    except ValueError:
        return _hidden_anyway(str(url).strip())


def _hidden_anyway(text: Any) -> str:
    """A text that is not a URL we can read: everything between ``://`` and the last ``@`` hidden (but
    a user name before a ``:``), and the value of every password/passfile option (to the next ``&``)."""
    text = re.sub(r"(?i)(?<![A-Za-z0-9_])(password|passfile)(\s*=\s*)[^&]*", rf"\1\2{HIDDEN}", str(text).strip())
    start, at = text.find("://"), text.rfind("@")
    if start >= 0 and at > start:
        text = text[:start + 3] + _hidden_userinfo(text[start + 3:at], always=True) + text[at:]
    return text


def _hidden_userinfo(userinfo: str, always: bool = False) -> str:
    """``USER:***`` for user information with a password (``***`` when what precedes the ``:`` is no
    user name); ``userinfo`` itself when it holds no ``:`` (no password), unless ``always``."""
    user, colon, _ = userinfo.partition(":")
    if not colon and not always:
        return userinfo
    return f"{user}:{HIDDEN}" if colon and _USER.fullmatch(user) else HIDDEN


def redact(text: Any) -> str:
    """``text`` (any message) with what looks like a password hidden: in each ``SCHEME://...@`` the part
    after the user up to the last ``@`` before the next URL or the end of the line, and every
    ``password=``/``passfile=`` value up to a blank or ``&``."""
    lines = []
    for line in str(text).split("\n"):
        starts = [found.end() for found in _ANY_SCHEME.finditer(line)]
        pieces, done = [], 0
        for index, start in enumerate(starts):
            at = line.rfind("@", start, starts[index + 1] if index + 1 < len(starts) else len(line))
            if at >= 0:
                pieces += [line[done:start], _hidden_userinfo(line[start:at])]
                done = at
        pieces.append(line[done:])
        lines.append(_SECRET_OPTION.sub(rf"\1\2{HIDDEN}", "".join(pieces)))
    return "\n".join(lines)
