"""Grafana's template-variable and macro expansion for raw InfluxQL panel queries, as Grafana 10/11 does it.

A panel query reaches InfluxDB in two steps (backend mode: ``rawQuery: true``, proxy access, the only mode of
Grafana 11, behind the ``influxdbBackendMigration`` toggle in 10; the classic browser-side path is not modelled):

1. In the browser, ``applyTemplateVariables`` of ``public/app/plugins/datasource/influxdb/datasource.ts`` runs
   ``templateSrv.replace(query.query, scopedVars, interpolateQueryExpr)`` (``public/app/features/templating/
   template_srv.ts``; formats of ``@grafana/scenes`` ``variables/interpolation/formatRegistry.ts``). The scoped
   ``__interval``/``__interval_ms`` are set to the literal ``$__interval``/``$__interval_ms`` so that the backend
   fills them in; ``__from``/``__to`` are epoch milliseconds.
2. In the server, ``(*Query).Build`` of ``pkg/tsdb/influxdb/models/query.go`` replaces, as plain substrings and in
   this order, ``$timeFilter``, ``$interval``, ``$__interval_ms`` and ``$__interval``. The interval is the request's
   ``intervalMs`` (``pkg/services/query/query.go``), at least 1 ms (``models/model_parser.go``), printed by
   ``gtime.FormatInterval`` (grafana-plugin-sdk-go ``backend/gtime/gtime.go``). ``intervalMs`` itself was computed in
   the browser by ``rangeUtil.calculateInterval`` (``packages/grafana-data/src/datetime/rangeutil.ts``, formerly
   ``kbn.calculateInterval`` in ``public/app/core/utils/kbn.ts``), called by ``PanelQueryRunner``/``SceneQueryRunner``.

Not expanded, because Grafana does not expand them for InfluxQL: ``$__timeFilter`` (only ``$timeFilter`` is replaced
by ``Build``), ``$__range``/``$__range_s``/``$__range_ms`` and ``$__rate_interval`` (scoped variables of the
Prometheus and Loki data sources only), ``${timeFilter}``/``[[timeFilter]]``. They stay in the query, as in Grafana,
and ``unexpanded`` reports them.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

__all__ = [
    "TimeRange",
    "Variable",
    "escape_regex",
    "expand",
    "format_interval",
    "interpolate_variables",
    "interval",
    "interval_ms",
    "round_interval",
    "time_filter",
    "unexpanded",
]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


@dataclass(frozen=True)
class TimeRange:
    """The dashboard time range; Grafana sends both ends as epoch milliseconds."""

    start: datetime  # aware UTC
    end: datetime

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ValueError("TimeRange needs timezone-aware datetimes")

    @property
    def from_ms(self) -> int:
        return (self.start - _EPOCH) // _MS  # moment's valueOf(): whole milliseconds

    @property
    def to_ms(self) -> int:
        return (self.end - _EPOCH) // _MS


@dataclass(frozen=True)
class Variable:
    """A dashboard template variable and its current selection.

    ``values`` are what Grafana substitutes: the option *values* (``current.value``; for a custom option
    ``"Graaf van Egmontstraat : gw-egmont"`` that is ``gw-egmont``). ``texts`` (the labels) only matter for the
    ``:text`` format and default to ``values``. With "All" selected, ``values`` are all option values (the
    ``options[1:]`` of ``getAllValue``), used only when there is no ``all_value``.
    """

    name: str
    values: list[str]
    multi: bool = False
    include_all: bool = False
    all_selected: bool = False
    all_value: str | None = None  # custom allValue, e.g. ".*"
    texts: list[str] | None = None

    def __post_init__(self) -> None:
        if not self.multi and not self.all_selected and len(self.values) != 1:
            raise ValueError(f"single-value variable {self.name!r} needs exactly one value, got {self.values!r}")
        if self.all_selected and not self.include_all:
            raise ValueError(f"variable {self.name!r}: 'All' selected but include_all is off")


# ---------------------------------------------------------------- interval (rangeutil.ts, gtime.go)

# rangeutil.ts roundInterval: (upper bound exclusive, result) in ms
_ROUNDING: tuple[tuple[int, int], ...] = (
    (10, 1), (15, 10), (35, 20), (75, 50), (150, 100), (350, 200), (750, 500),
    (1_500, 1_000), (3_500, 2_000), (7_500, 5_000), (12_500, 10_000), (17_500, 15_000), (25_000, 20_000),
    (45_000, 30_000), (90_000, 60_000), (210_000, 120_000), (450_000, 300_000), (750_000, 600_000),
    (1_050_000, 900_000), (1_500_000, 1_200_000), (2_700_000, 1_800_000), (5_400_000, 3_600_000),
    (9_000_000, 7_200_000), (16_200_000, 10_800_000), (32_400_000, 21_600_000), (86_400_000, 43_200_000),
    (604_800_000, 86_400_000), (1_814_400_000, 604_800_000), (3_628_800_000, 2_592_000_000),
)  # fmt: skip
_ONE_YEAR_MS = 31_536_000_000

# rangeutil.ts describeInterval: unanchored in Grafana 10/11, so ">10s" finds "10s" (kbn.ts stripped the ">")
_INTERVAL_RE = re.compile(r"(-?\d+(?:\.\d+)?)(ms|[Mwdhmsy])", re.ASCII)
_INTERVAL_SECONDS = {"y": 31536000, "M": 2592000, "w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1, "ms": 0.001}


def round_interval(ms: float) -> int:
    """``roundInterval`` of rangeutil.ts: the raw interval (ms) snapped to Grafana's ladder of nice steps."""
    for bound, result in _ROUNDING:
        if ms < bound:
            return result
    return _ONE_YEAR_MS


def _interval_to_ms(text: str) -> float:
    """``intervalToMs`` (describeInterval): a bare number is seconds; only the integer part of the count counts."""
    if _js_number(text) not in (0.0, None):  # `if (Number(str))`
        count = _js_parse_int(text)
        return math.nan if count is None else count * 1000.0
    m = _INTERVAL_RE.search(text)
    if not m:
        raise ValueError(f"invalid interval {text!r}: a number or a number with one of ms, s, m, h, d, w, M, y")
    count = int(m.group(1).split(".")[0])  # parseInt
    return _INTERVAL_SECONDS[m.group(2)] * 1000 * count


def interval_ms(time_range: TimeRange, max_data_points: int = 1000, min_interval: str | None = None) -> int:
    """The ``intervalMs`` the backend receives (calculateInterval), at least 1 ms (model_parser.go)."""
    if max_data_points <= 0:
        raise ValueError("max_data_points must be positive")
    ms: float = round_interval((time_range.to_ms - time_range.from_ms) / max_data_points)
    if min_interval:  # panel "Min interval" (`interval`) if set, else the data source's timeInterval
        low = _interval_to_ms(min_interval)
        if low > ms:  # NaN never wins, as in JS
            ms = low
    return max(1, int(ms))  # MustInt64 of the JSON number; Go then clamps to 1 ms


def interval(time_range: TimeRange, max_data_points: int = 1000, min_interval: str | None = None) -> timedelta:
    """Grafana's $__interval for a panel: range / max data points, rounded as Grafana rounds it, not below
    min_interval (panel ``interval`` or datasource ``timeInterval``, like "1m", ">10s")."""
    return timedelta(milliseconds=interval_ms(time_range, max_data_points, min_interval))


def format_interval(d: timedelta) -> str:
    """gtime.FormatInterval: the largest whole unit, truncated ("90s" -> "1m"); below 1 ms "1ms"."""
    ns = (d.days * 86_400 + d.seconds) * 1_000_000_000 + d.microseconds * 1_000
    for unit, size in (
        ("y", 365 * 86_400_000_000_000),
        ("d", 86_400_000_000_000),
        ("h", 3_600_000_000_000),
        ("m", 60_000_000_000),
        ("s", 1_000_000_000),
        ("ms", 1_000_000),
    ):
        if ns >= size:
            return f"{ns // size}{unit}"
    return "1ms"


def time_filter(time_range: TimeRange) -> str:
    """``renderTimeFilter`` of models/query.go: inclusive bounds, epoch milliseconds."""
    return f"time >= {time_range.from_ms}ms and time <= {time_range.to_ms}ms"


# ---------------------------------------------------------------- JavaScript semantics the source relies on

_JS_SPACE = (
    "\t\n\v\f\r \u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029"
    "\u202f\u205f\u3000\ufeff"
)
_JS_FLOAT_PREFIX = re.compile(r"[+-]?(?:Infinity|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)", re.ASCII)
_JS_NUMBER = re.compile(
    r"[+-]?(?:Infinity|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)|0[xX][0-9a-fA-F]+|0[oO][0-7]+"
    r"|0[bB][01]+",
    re.ASCII,
)


def _js_parse_float_is_nan(s: str) -> bool:
    """``isNaN(parseFloat(s))``: parseFloat reads the longest numeric prefix ("8.1x" -> 8.1, "a" -> NaN)."""
    return _JS_FLOAT_PREFIX.match(s.lstrip(_JS_SPACE)) is None


def _js_parse_int(s: str) -> int | None:
    m = re.match(r"[+-]?\d+", s.lstrip(_JS_SPACE), re.ASCII)
    return int(m.group(0)) if m else None


def _js_number(s: str) -> float | None:
    """``Number(s)`` (None for NaN)."""
    s = s.strip(_JS_SPACE)
    if not s:
        return 0.0
    if not _JS_NUMBER.fullmatch(s):
        return None
    if s[:2].lower() in ("0x", "0o", "0b"):
        return float(int(s, 0))
    return float(s.replace("Infinity", "inf"))


def _js_string(value: str | list[str]) -> str:
    """``String(value)``; arrays join with ",", as does the implicit conversion of String.prototype.replace."""
    return ",".join(value) if isinstance(value, list) else value


def escape_regex(value: str) -> str:
    """``escapeRegex`` of @grafana/data (text/string.ts): backslash before ``\\ ^ $ * + ? . ( ) | [ ] { } /``.

    The slash matters for InfluxQL, whose regex literals are ``/``-delimited; ``-`` is not escaped."""
    return re.sub(r"[\\^$*+?.()|\[\]{}/]", r"\\\g<0>", value)


# ---------------------------------------------------------------- interpolateQueryExpr (influxdb/datasource.ts)

# The regex literals of an InfluxQL query after =~ or !~ (the regexMatcher of Grafana 11.4.3+, PR #100762)
_INFLUX_REGEX_LITERAL = re.compile(
    r"(\s*(=|!)~\s*)/((?![*+?])(?:[^\r\n\[/\\]|\\.|\[(?:[^\r\n\]\\]|\\.)*\])+)/"
    r"((?:g(?:im?|mi?)?|i(?:gm?|mg?)?|m(?:gi?|ig?)?)?)"
)


def _influx_interpolate_query_expr(value: str | list[str], variable: Variable | None, query: str) -> str | list[str]:
    """InfluxDatasource.interpolateQueryExpr: the format function Grafana passes to templateSrv.replace.

    - a value that starts like a number (parseFloat) is returned as is;
    - a multi-value variable is always regex-escaped, several values as ``(a|b)`` (one selected: ``(a)``);
    - otherwise (single value, or "All" of a non-multi variable) it is escaped only if ``$name`` appears inside a
      ``=~ /.../`` or ``!~ /.../`` literal of the original query; an unescaped list becomes "a,b" (JS toString).
    """
    if isinstance(value, str) and not _js_parse_float_is_nan(value):
        return value
    if variable is not None and variable.multi:
        if isinstance(value, str):
            return escape_regex(value)
        return "(" + "|".join(escape_regex(v) for v in value) + ")"
    if not query:
        return value
    name = variable.name if variable is not None else "undefined"  # JS template string of an undefined name
    uses_var = re.compile(r"/(?:\^)?(.*)(\$" + re.escape(name) + r")(.*)(?:\$)?/")
    for literal in _INFLUX_REGEX_LITERAL.finditer(query):
        if uses_var.search(literal.group(0)):
            if isinstance(value, str):
                return escape_regex(value)
            return "(" + "|".join(escape_regex(v) for v in value) + ")"
    return value


# ---------------------------------------------------------------- templateSrv.replace and the format registry

# variableRegex of public/app/features/variables/utils.ts: $var, [[var]] / [[var:fmt]], ${var} / ${var.path:fmt}
_VARIABLE_RE = re.compile(r"\$(\w+)|\[\[(\w+?)(?::(\w+))?\]\]|\$\{(\w+)(?:\.([^:^}]+))?(?::([^}]+))?\}", re.ASCII)

_FormatFn = Callable[[str | list[str], Variable | None], str | list[str]]


class _Unsupported(Exception):
    """A format Grafana has but this module does not reproduce: the reference is left as written."""


def _sq(v: str) -> str:
    return "'" + v.replace("'", "\\'") + "'"


def _dq(v: str) -> str:
    return '"' + v.replace('"', '\\"') + '"'


def _sql(v: str) -> str:
    return "'" + v.replace("'", "''").replace('"', '\\"') + "'"


def _lucene_escape(v: str) -> str:
    if _js_number(v) is not None:  # isNaN(+value) === false
        return v
    return re.sub(r'([!*+\-=<>\s&|()\[\]{}^~?:\\/"])', r"\\\1", v)


def _percent(v: str, safe: str = "-_.~") -> str:
    return quote(v, safe=safe)  # encodeURIComponent, plus ! ' ( ) * (encodeURIComponentStrict)


def _js_iso(ms: int) -> str:
    dt = _EPOCH + timedelta(milliseconds=ms)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def _format_date(value: str | list[str], args: list[str]) -> str:
    nr = _js_parse_int(value) if isinstance(value, str) else None
    if nr is None:
        return "NaN"
    arg = args[0] if args else "iso"
    if arg == "ms":
        return _js_string(value)
    if arg == "seconds":
        return str(math.floor(nr / 1000 + 0.5))  # Math.round
    if arg == "iso":
        return _js_iso(nr)
    raise _Unsupported("moment.js date patterns depend on the browser's time zone")


def _format(
    value: str | list[str], fmt: str | None, variable: Variable | None, name: str, text: str | list[str]
) -> str:
    """formatVariableValue with a named format (formatRegistry.ts); unknown names fall back to glob as in Grafana."""
    fmt = fmt or "glob"
    fid, *args = fmt.split(":")
    match fid:
        case "raw":
            return _js_string(value)
        case "regex":
            if not isinstance(value, list):
                return escape_regex(value)
            escaped = [escape_regex(v) for v in value]
            return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"
        case "pipe":
            return "|".join(value) if isinstance(value, list) else value
        case "csv":
            return _js_string(value)
        case "distributed":
            if not isinstance(value, list):
                return value
            return ",".join(v if i == 0 else f"{name}={v}" for i, v in enumerate(value))
        case "json":
            return json.dumps(value, ensure_ascii=False, separators=(",", ":")) if isinstance(value, list) else value
        case "lucene":
            if not isinstance(value, list):
                return _lucene_escape(value)
            return "(" + " OR ".join(f'"{_lucene_escape(v)}"' for v in value) + ")" if value else "__empty__"
        case "percentencode":
            return _percent("{" + ",".join(value) + "}" if isinstance(value, list) else value)
        case "uriencode":
            return _percent("{" + ",".join(value) + "}" if isinstance(value, list) else value, safe="-_.~;,/?:@&=+$#")
        case "singlequote":
            return ",".join(map(_sq, value)) if isinstance(value, list) else _sq(value)
        case "doublequote":
            return ",".join(map(_dq, value)) if isinstance(value, list) else _dq(value)
        case "sqlstring":
            return ",".join(map(_sql, value)) if isinstance(value, list) else _sql(value)
        case "join":
            return (args[0] if args else ",").join(value) if isinstance(value, list) else value
        case "date":
            return _format_date(value, args)
        case "text":  # LegacyVariableWrapper.getValueText
            return " + ".join(text) if isinstance(text, list) else text
        case "html" | "queryparam" | "customqueryparam":
            raise _Unsupported(fid)
        case _:  # "glob" and, as Grafana does after a console.error, any unknown format
            return "{" + ",".join(value) + "}" if isinstance(value, list) and len(value) > 1 else _js_string(value)


@dataclass(frozen=True)
class _Scope:
    variables: Mapping[str, Variable]
    builtins: Mapping[str, str]  # scoped vars and index entries without a variable model (__interval, __from)


def _evaluate(match: re.Match[str], scope: _Scope, default_format: _FormatFn | str | None) -> str:
    """_evaluateVariableExpression of template_srv.ts for one reference."""
    name = match.group(1) or match.group(2) or match.group(4)
    field_path = match.group(5)
    fmt: _FormatFn | str | None = match.group(3) or match.group(6) or default_format
    try:
        if name in scope.builtins:
            if field_path:  # lodash property() on a string: not reproduced
                return match.group(0)
            value: str | list[str] = scope.builtins[name]
            var = None
            text: str | list[str] = value
        elif name in scope.variables:
            var = scope.variables[name]
            if field_path:
                return match.group(0)
            value = list(var.values) if var.multi else var.values[0] if var.values else ""
            text = list(var.texts or var.values) if var.multi else (var.texts or var.values or [""])[0]
            if var.all_selected:
                text = "All"
                if var.all_value:
                    # "skip formatting of custom all values unless format set to text or percentencode"
                    if fmt not in ("text", "percentencode"):  # this.replace(allValue): no scoped vars, glob
                        index = {k: v for k, v in scope.builtins.items() if k in ("__from", "__to")}
                        return _replace(var.all_value, _Scope(scope.variables, index), None)
                    value = var.all_value
                else:
                    value = list(var.values)
        else:
            return match.group(0)  # unknown: left as written (macroRegistry has no query macros)
        if callable(fmt):
            return _js_string(fmt(value, var))
        return _format(value, fmt, var, name, text)
    except _Unsupported:
        return match.group(0)


def _replace(target: str, scope: _Scope, default_format: _FormatFn | str | None) -> str:
    return _VARIABLE_RE.sub(lambda m: _evaluate(m, scope, default_format), target)


def _check(variables: Mapping[str, Variable] | None) -> Mapping[str, Variable]:
    variables = variables or {}
    for key, var in variables.items():
        if key != var.name:
            raise ValueError(f"variable registered as {key!r} is named {var.name!r}")
    return variables


def _frontend(query: str, variables: Mapping[str, Variable], builtins: Mapping[str, str]) -> str:
    scope = _Scope(variables, builtins)

    def influx_format(value: str | list[str], var: Variable | None) -> str | list[str]:
        return _influx_interpolate_query_expr(value, var, query)

    return _replace(query, scope, influx_format)


def interpolate_variables(query: str, variables: dict[str, Variable]) -> str:
    """Template variables as Grafana's InfluxDB datasource interpolates them: $var, ${var}, [[var]], ${var:regex},
    ${var:raw}...; multi-value / include-all variables become a regex alternation with regex-escaped values, as
    InfluxDB's datasource does (interpolateQueryExpr), so ``"cell" =~ /^$cell$/`` works.

    Only the dashboard's variables: built-ins (``$__interval``, ``$__from``...) are left for ``expand``."""
    return _frontend(query, _check(variables), {})


# ---------------------------------------------------------------- the whole pipeline


def expand(
    query: str,
    time_range: TimeRange,
    *,
    variables: dict[str, Variable] | None = None,
    max_data_points: int = 1000,
    min_interval: str | None = None,
) -> str:
    """The query as it reaches InfluxDB: template variables first (browser), then ``$timeFilter``, ``$interval``,
    ``$__interval_ms`` and ``$__interval`` (server), e.g.
    ``time >= 1700000000000ms and time <= 1700003600000ms`` for ``$timeFilter``.

    ``$__from``/``$__to`` (epoch ms, ``${__from:date}``, ``:date:iso``, ``:date:seconds``, ``:date:ms``) are
    template built-ins of the browser step. ``min_interval`` may itself use variables, as the panel's may."""
    checked = _check(variables)
    if min_interval:  # PanelQueryRunner: templateSrv.replace(minInterval, request.scopedVars)
        min_interval = _replace(min_interval, _Scope(checked, {}), None)
    step_ms = interval_ms(time_range, max_data_points, min_interval)
    builtins = {
        "__interval": "$__interval",  # applyTemplateVariables: "We want to interpolate these variables on backend"
        "__interval_ms": "$__interval_ms",
        "__from": str(time_range.from_ms),  # template_srv.ts updateIndex
        "__to": str(time_range.to_ms),
    }
    res = _frontend(query, checked, builtins)
    text = format_interval(timedelta(milliseconds=step_ms))
    res = res.replace("$timeFilter", time_filter(time_range))  # models/query.go Build, same order
    res = res.replace("$interval", text)
    res = res.replace("$__interval_ms", str(step_ms))
    return res.replace("$__interval", text)


def unexpanded(query: str) -> list[str]:
    """The variable references still in an expanded query, as written (``$__range``, ``${x:fmt}``, ``[[y]]``), in
    order and without repeats: what Grafana would send to InfluxDB unreplaced. A ``$`` escaped by a backslash (a
    regex-escaped value such as ``a\\$b``) is not a reference."""
    found: list[str] = []
    for m in _VARIABLE_RE.finditer(query):
        backslashes = len(query[: m.start()]) - len(query[: m.start()].rstrip("\\"))
        if m.group(0).startswith("$") and backslashes % 2:
            continue
        if m.group(0) not in found:
            found.append(m.group(0))
    return found
