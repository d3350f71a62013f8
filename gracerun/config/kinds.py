"""The records of gracerun's built-in hook and probe kinds, and `opt()`, which declares
a record's field as a TOML key (default, parser, help) once.

plan_reader.py reads tables into these records from those declarations,
reference.py documents them, and each kind's module under lifecycle/hooks/ or
lifecycle/probes/ names its record (RECORD) in the kind registries.  Kinds added
later (nacos, eureka, ...) keep their records in their own module, declared the
same way.  Imported only for configs with hooks or probes (see record.py).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from gracerun.config import strings, values
from gracerun.config.record import MISSING, Field, Record
from gracerun.config.values import Env, Parser


def opt(default: Any = MISSING, *, help: str, parse: Parser | None = None,
        expand: Callable[[Env], Parser] | None = None, expect: str = "", shown: str | None = None,
        rule: str = "", more: str = "", keys: tuple[str, ...] = (), secret: bool = False) -> Any:
    """A field that is a TOML key: its default, parser and documentation, once.

    parse / expand: the parser, or a factory of it taking the environment (the value
    expands ${VAR}); neither: a table the reader reads itself.  expect: what the
    "missing" message asks for (the field is required).  shown: the docs' words for
    the default when the value alone does not say it.  rule: a default worked out
    from other values (a format string of the kind and index for hook names).
    keys: the TOML keys, when they are not the field's name.  secret: a password or
    token: left out of the record's repr (and so of any log line that prints it).
    """
    meta = {"help": help, "parse": parse, "expand": expand, "expect": expect,
            "shown": shown, "rule": rule, "more": more, "keys": keys, "secret": secret}
    if isinstance(default, dict):
        return Field(default_factory=dict, metadata=meta, repr=not secret)
    return Field(default, metadata=meta, repr=not secret)


# ------------------------------------------------------------------- hooks

_TIMEOUT: dict[str, Any] = dict(
    parse=values.positive_duration,
    help="the longest the hook may take (for http, each attempt)",
    more="Greater than zero. A hook is also cut short by its phase's `timeout` and by the "
         "pre-stop deadline.")


class Hook(Record):
    name: str = opt(parse=strings.hook_name, rule="{type}-{n}",
                    help="for the log, the timeline and metrics: 1-64 letters, digits, `_`, "
                         "`-`, `.`, `:`; unique within the phase",
                    more="`n` counts from 1 in the phase.")
    timeout: float = opt(5.0, **_TIMEOUT)
    on_failure: str = opt("continue", parse=values.Choice("continue", "stop"),
                          help='`"continue"`: log the failure and go on; `"stop"`: skip the '
                               "rest of the pre-stop phases and go straight to the stop phase")

    @property
    def kind(self) -> str:
        return kind_of(type(self))

    def worst_case(self) -> float:
        return self.timeout


class ExecHook(Hook):
    """Runs a command, in its own process group, with gracerun's environment plus `env`."""

    command: tuple[str, ...] = opt(expand=strings.argv,
                                   expect='an array like ["/bin/deregister", "--now"]',
                                   help='an array of strings, the program first: `["curl", '
                                        '"-sf", "http://..."]`',
                                   more="A single string is rejected (there is no shell; use "
                                        '`["sh", "-c", "..."]` for one).')
    env: Mapping[str, str] = opt({}, expand=strings.environment,
                                 help="a table of strings added to the environment")
    cwd: str | None = opt(None, expand=strings.path, shown="gracerun's",
                          help="the working directory")


class HttpHook(Hook):
    """Sends one HTTP request, with retries."""

    url: str = opt(expand=strings.url, expect="the URL to call",
                   help="an `http://` or `https://` URL")
    method: str = opt("GET", parse=values.Choice("GET", "POST", "PUT", "DELETE", "PATCH",
                                                 "HEAD", upper=True),
                      help="`GET`, `POST`, `PUT`, `DELETE`, `PATCH` or `HEAD`, in any case")
    headers: Mapping[str, str] = opt({}, expand=strings.headers,
                                     help="a table of strings: header names of token "
                                          "characters, one-line latin-1 values")
    body: bytes | None = opt(None, expand=strings.body, help="a string, sent as UTF-8")
    bearer_token_file: str | None = opt(None, expand=strings.path,
                                        help="a file holding a bearer token, read at every "
                                             "request (tokens rotate) and sent as "
                                             "`Authorization: Bearer ...`; never logged")
    ca_file: str | None = opt(None, expand=strings.path, shown="the system's store",
                              help="the CA certificates (PEM) that an `https://` server's "
                                   "certificate must chain to")
    expect_status: frozenset[int] = opt(frozenset(), parse=values.statuses, shown="any 2xx",
                                        help="the status codes that count as success: a "
                                             "number or an array of numbers (100-599)")
    retries: int = opt(0, parse=values.whole(0, 10)(None),
                       help="further attempts after a failed one (a connection error or an "
                            "unexpected status), 0 to 10")
    backoff: float = opt(0.2, parse=values.duration,
                         help="the wait before the first retry; it doubles before each "
                              "further one")

    def worst_case(self) -> float:
        waits = sum(self.backoff * 2**i for i in range(self.retries))
        return self.timeout * (self.retries + 1) + waits


class SleepHook(Hook):
    """Waits a fixed time: the blind wait, for when nothing better can be probed."""

    timeout: float = opt(None, rule="its `duration`", **_TIMEOUT)
    duration: float = opt(parse=values.duration, expect='a duration like "2s"',
                          help="how long. Its worst case is the duration itself")

    def __post_init__(self) -> None:
        if self.timeout is None:
            object.__setattr__(self, "timeout", max(self.duration, 0.001))

    def worst_case(self) -> float:
        return min(self.duration, self.timeout)


class SignalHook(Hook):
    """Sends a signal to the service, e.g. SIGUSR1 to stop its consumers."""

    timeout: float = opt(1.0, **_TIMEOUT)  # sending a signal is instant: don't book 5s
    signal: int = opt(parse=values.signal_number, expect='a signal name like "SIGUSR1"',
                      help="the signal (1-64, a name or a number)")
    group: bool = opt(False, parse=values.boolean,
                      help="send it to the service's whole process group instead of the "
                           "service alone")


_HAPROXY_SOCKET: dict[str, Any] = dict(
    expand=strings.haproxy_socket, shown="",
    help="the path of HAProxy's stats socket (a unix socket)")
_HAPROXY_ADDRESS: dict[str, Any] = dict(
    expand=strings.haproxy_address, shown="",
    help='the `"HOST:PORT"` of a TCP stats socket (`"127.0.0.1:9999"`, `"[::1]:9999"`). '
         "Exactly one of `socket` and `address` is required")
_HAPROXY_BACKEND: dict[str, Any] = dict(
    expand=strings.haproxy_name("backend"),
    expect='the backend name in HAProxy\'s configuration, e.g. "app"',
    help="the backend's name in HAProxy's configuration")
_HAPROXY_SERVER: dict[str, Any] = dict(
    expand=strings.haproxy_name("server"),
    expect='the server name in HAProxy\'s configuration, e.g. "web1"',
    help="this instance's server name in that backend. Like `backend`, letters, digits, "
         "`_`, `-`, `.`, `:` (HAProxy's own rule; anything else could not name a server, "
         "and a `;` would start another command)")


class HaproxyHook(Hook):
    """`set server backend/server state drain|maint` on HAProxy's Runtime API."""

    socket: str | None = opt(None, **_HAPROXY_SOCKET)
    address: str | None = opt(None, **_HAPROXY_ADDRESS)
    backend: str = opt(**_HAPROXY_BACKEND)
    server: str = opt(**_HAPROXY_SERVER)
    state: str = opt("drain", parse=values.Choice("drain", "maint"),
                     help='`"drain"`: no new connections, except those that persistence '
                          "(stick tables, cookies) sends to this server; connections already "
                          'open go on. `"maint"`: no new connections at all, persistent ones '
                          "included")

    @property
    def target(self) -> str:
        return self.socket if self.socket is not None else self.address or ""


# ------------------------------------------------------------------ probes


class Probe(Record):
    timeout: float = opt(2.0, parse=values.positive_duration,
                         help="the longest one reading may take; a reading that takes longer "
                              "has failed. Greater than zero")

    @property
    def kind(self) -> str:
        return kind_of(type(self))


class ConnectionsProbe(Probe):
    """Reads the service's TCP connections on `ports` from the kernel (sockdiag)."""

    ports: tuple[int, ...] = opt(keys=("port", "ports"), expand=values.whole(1, 65535),
                                 help='`port`: a port, 1-65535 (or a string such as '
                                      '`"${PORT:-8080}"`); `ports`: an array of them. One of '
                                      "the two is required")
    idle: float = opt(1.0, parse=values.duration,
                      help="drain: a connection on which no byte moved for this long is not "
                           "in flight")


class HttpProbe(Probe):
    """GET url; the reading is a number in the body, or the status code's verdict."""

    url: str = opt(expand=strings.url, expect="the URL to GET",
                   help="an `http://` or `https://` URL")
    value: str = opt("body", parse=values.Choice("body", "status"),
                     help='`"body"`: the reading is the first number in the response body, or '
                          "the JSON field `field`; a status not in `ok_status` is a failed "
                          'reading. `"status"`: the reading is 0 when the status is in '
                          "`ok_status`, 1 otherwise")
    field: str | None = opt(None, expand=strings.text,
                            help='with `value = "body"`: the key of a JSON object holding the '
                                 'number, e.g. `"inflight"`')
    ok_status: frozenset[int] = opt(frozenset({200}), parse=values.statuses,
                                    help="a number or a non-empty array of numbers (100-599)")
    headers: Mapping[str, str] = opt({}, expand=strings.headers,
                                     help="a table of strings: request headers")
    bearer_token_file: str | None = opt(None, expand=strings.path,
                                        help="as for the http hook: a bearer token's file, "
                                             "read at every request")
    ca_file: str | None = opt(None, expand=strings.path, shown="the system's store",
                              help="as for the http hook: the CA for an `https://` URL")


class ExecProbe(Probe):
    """Runs a command: exit 0 reads as 0 (drained), anything else as 1."""

    command: tuple[str, ...] = opt(expand=strings.argv,
                                   expect='an array like ["test", "-f", "/tmp/idle"]',
                                   help='an array of strings, e.g. `["test", "-f", '
                                        '"/tmp/idle"]`')


class TcpProbe(Probe):
    """Connects to host:port: 0 when it accepts, 1 when not (readiness gating)."""

    host: str = opt("127.0.0.1", expand=strings.host, help="the host to connect to")
    port: int = opt(expand=values.whole(1, 65535), expect="the TCP port to connect to",
                    help="1-65535")


class HaproxyProbe(Probe):
    """A server's row of HAProxy's `show stat`: drain reads its current sessions (scur,
    plus its queue), propagate its cumulative sessions (stot)."""

    socket: str | None = opt(None, **_HAPROXY_SOCKET)
    address: str | None = opt(None, **_HAPROXY_ADDRESS)
    backend: str = opt(**_HAPROXY_BACKEND)
    server: str = opt(**_HAPROXY_SERVER)

    @property
    def target(self) -> str:
        return self.socket if self.socket is not None else self.address or ""


# ---------------------------------------------------------------- kinds


def kind_of(cls: type) -> str:
    """ExecHook -> "exec": the `type` a record stands for."""
    return cls.__name__.removesuffix("Hook").removesuffix("Probe").lower()
