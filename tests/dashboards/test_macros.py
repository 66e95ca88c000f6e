"""Tests of ``dashboards.macros`` against the expectations of Grafana's own tests, cited per case.

Sources (github.com/grafana/...):
- grafana: packages/grafana-data/src/datetime/rangeutil.test.ts ("roundInterval", "describe_interval");
  pkg/tsdb/influxdb/models/query_test.go (TestInfluxdbQueryBuilder); public/app/plugins/datasource/influxdb/
  datasource_backend_mode.test.ts and datasource.test.ts ("interpolateQueryExpr", variable rendering).
- grafana-plugin-sdk-go: backend/gtime/gtime_test.go (TestFormatInterval).
- scenes: packages/scenes/src/variables/interpolation/formatRegistry.test.ts.
The last test runs expanded queries against the real influxd of ``tests/conftest.py``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest

from dashboards.macros import (
    TimeRange,
    Variable,
    escape_regex,
    expand,
    format_interval,
    interpolate_variables,
    interval,
    interval_ms,
    round_interval,
    time_filter,
    unexpanded,
)

T0 = datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)  # 1700000000000 ms
HOUR = TimeRange(T0, T0 + timedelta(hours=1))
# query_test.go: the 5-minute range of TestInfluxdbQueryBuilder
AUG = datetime(2020, 8, 1, tzinfo=UTC)
FIVE_MIN = TimeRange(AUG, AUG + timedelta(minutes=5))


def rng(**span: float) -> TimeRange:
    return TimeRange(T0, T0 + timedelta(**span))


# ---------------------------------------------------------------- interval


# rangeutil.test.ts "roundInterval" (every case, including its boundaries)
@pytest.mark.parametrize(("raw", "rounded"), [
    (9, 1), (14, 10), (34, 20), (74, 50), (149, 100), (349, 200), (749, 500), (1499, 1000), (3499, 2000),
    (7499, 5000), (12499, 10000), (17499, 15000), (24999, 20000), (44999, 30000), (89999, 60000),
    (209999, 120000), (449999, 300000), (749999, 600000), (1049999, 900000), (1499999, 1200000),
    (2699999, 1800000), (5399999, 3600000), (8999999, 7200000), (16199999, 10800000), (32399999, 21600000),
    (86399999, 43200000), (604799999, 86400000), (1814399999, 604800000), (3628799999, 2592000000),
    (3628800000, 31536000000),
])  # fmt: skip
def test_round_interval_table(raw: int, rounded: int) -> None:
    assert round_interval(raw) == rounded


@pytest.mark.parametrize(("time_range", "points", "expected", "text"), [
    (rng(hours=1), 1000, timedelta(seconds=5), "5s"),  # 3.6 s -> 5 s
    (rng(hours=24), 1000, timedelta(minutes=1), "1m"),  # 86.4 s -> 1 m
    (rng(days=7), 1000, timedelta(minutes=10), "10m"),  # 604.8 s -> 10 m
    (rng(days=30), 1000, timedelta(minutes=30), "30m"),  # 2592 s -> 30 m
    (rng(days=365), 1000, timedelta(hours=6), "6h"),  # 31536 s -> 6 h
    (rng(minutes=5), 1000, timedelta(milliseconds=200), "200ms"),  # 300 ms -> 200 ms
    (rng(hours=1), 1920, timedelta(seconds=2), "2s"),  # a full-width panel: 1.875 s -> 2 s
    (rng(seconds=15), 1000, timedelta(milliseconds=20), "20ms"),  # 15 ms -> 20 ms
    (rng(seconds=5), 1000, timedelta(milliseconds=1), "1ms"),  # 5 ms -> 1 ms
    (rng(milliseconds=1), 1000, timedelta(milliseconds=1), "1ms"),  # never below 1 ms
])  # fmt: skip
def test_interval_for_panel(time_range: TimeRange, points: int, expected: timedelta, text: str) -> None:
    assert interval(time_range, points) == expected
    assert format_interval(interval(time_range, points)) == text


@pytest.mark.parametrize(("min_interval", "expected"), [
    (">10s", timedelta(seconds=10)),  # the query editor's ">" prefix: a lower limit
    ("10s", timedelta(seconds=10)),
    ("1m", timedelta(minutes=1)),
    (">1m", timedelta(minutes=1)),
    ("2s", timedelta(seconds=5)),  # below the computed 5 s: no effect
    ("30", timedelta(seconds=30)),  # rangeutil.test.ts: a bare number is seconds
    ("1.5m", timedelta(minutes=1)),  # parseInt: only the integer part of the count
    ("100ms", timedelta(seconds=5)),
    ("1h", timedelta(hours=1)),
])  # fmt: skip
def test_min_interval(min_interval: str, expected: timedelta) -> None:
    assert interval(HOUR, 1000, min_interval) == expected


def test_min_interval_invalid() -> None:
    with pytest.raises(ValueError, match="invalid interval"):
        interval(HOUR, 1000, "10x")  # rangeutil.test.ts: describeInterval('123xyz') throws


def test_min_interval_from_variable() -> None:
    # PanelQueryRunner: templateSrv.replace(minInterval, scopedVars) before calculateInterval
    res = expand("time($__interval)", HOUR, variables={"res": Variable("res", ["1m"])}, min_interval=">$res")
    assert res == "time(1m)"


# grafana-plugin-sdk-go gtime_test.go TestFormatInterval, plus the truncation and the 1 ms floor
@pytest.mark.parametrize(("duration", "text"), [
    (timedelta(seconds=61), "1m"), (timedelta(milliseconds=30), "30ms"), (timedelta(hours=23), "23h"),
    (timedelta(hours=24), "1d"), (timedelta(days=367), "1y"),
    (timedelta(seconds=90), "1m"), (timedelta(milliseconds=1500), "1s"), (timedelta(days=30), "30d"),
    (timedelta(weeks=1), "7d"), (timedelta(milliseconds=200), "200ms"), (timedelta(0), "1ms"),
    (timedelta(microseconds=500), "1ms"),
])  # fmt: skip
def test_format_interval(duration: timedelta, text: str) -> None:
    assert format_interval(duration) == text


# ---------------------------------------------------------------- time filter and the backend replacements


def test_time_filter_format() -> None:
    # query_test.go "can render time range": inclusive >= / <=, epoch milliseconds with the ms suffix
    assert time_filter(TimeRange(AUG, AUG + timedelta(hours=1))) == (
        "time >= 1596240000000ms and time <= 1596243600000ms"
    )
    assert time_filter(TimeRange(AUG, AUG + timedelta(minutes=10))) == (
        "time >= 1596240000000ms and time <= 1596240600000ms"
    )
    assert expand("WHERE $timeFilter", HOUR) == "WHERE time >= 1700000000000ms and time <= 1700003600000ms"


def test_time_filter_truncates_to_milliseconds() -> None:
    tr = TimeRange(T0 + timedelta(microseconds=1999), T0 + timedelta(hours=1, microseconds=999))
    assert time_filter(tr) == "time >= 1700000000001ms and time <= 1700003600000ms"


def test_time_range_needs_aware_datetimes() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        TimeRange(datetime(2024, 1, 1), datetime(2024, 1, 2))


@pytest.mark.parametrize(("query", "points", "expected"), [
    # query_test.go "can build simple query" (Interval 10s)
    ('SELECT mean("value") FROM "policy"."cpu" WHERE $timeFilter GROUP BY time($__interval) fill(null)', 30,
     'SELECT mean("value") FROM "policy"."cpu" WHERE time >= 1596240000000ms and time <= 1596240300000ms '
     'GROUP BY time(10s) fill(null)'),
    # "can build query with math part using $__interval_ms variable" (Interval 5s)
    ('SELECT mean("value") / $__interval_ms FROM "cpu" WHERE $timeFilter', 60,
     'SELECT mean("value") / 5000 FROM "cpu" WHERE time >= 1596240000000ms and time <= 1596240300000ms'),
    # "can build query with old $interval variable" (Interval 200ms)
    ('SELECT mean("value") FROM "cpu" WHERE $timeFilter GROUP BY time($interval)', 1000,
     'SELECT mean("value") FROM "cpu" WHERE time >= 1596240000000ms and time <= 1596240300000ms '
     'GROUP BY time(200ms)'),
])  # fmt: skip
def test_backend_build(query: str, points: int, expected: str) -> None:
    assert expand(query, FIVE_MIN, max_data_points=points) == expected


def test_interval_syntaxes() -> None:
    # ${__interval} and [[__interval]] reach the backend as $__interval (applyTemplateVariables' scoped vars)
    q = "$__interval ${__interval} [[__interval]] $__interval_ms ${__interval_ms} $interval"
    assert expand(q, HOUR) == "5s 5s 5s 5000 5000 5s"
    assert interval_ms(HOUR) == 5000


def test_backend_replacements_are_plain_substrings() -> None:
    # strings.ReplaceAll in Build: no word boundaries, "$interval" before "$__interval_ms"
    assert expand("$intervalX $__interval_msY $timeFilterZ", FIVE_MIN, max_data_points=30) == (
        "10sX 10000Y time >= 1596240000000ms and time <= 1596240300000ms" + "Z"
    )


def test_from_to() -> None:
    # template_srv.ts index: epoch ms; formatRegistry.test.ts "Date" for the date format
    tr = TimeRange(datetime(2020, 7, 13, 20, 19, 9, 254000, tzinfo=UTC), T0)
    assert expand("$__from $__to", tr) == "1594671549254 1700000000000"
    assert expand("${__from:date} ${__from:date:iso} ${__from:date:seconds} ${__from:date:ms}", tr) == (
        "2020-07-13T20:19:09.254Z 2020-07-13T20:19:09.254Z 1594671549 1594671549254"
    )


def test_unsupported_left_as_written() -> None:
    q = (
        "WHERE $__timeFilter AND x > $__range_s GROUP BY time($__rate_interval) $__range ${__range_ms} "
        "${__from:date:YYYY-MM} $nosuchvar [[other]] ${timeFilter}"
    )
    res = expand(q, HOUR)
    assert res == q  # Grafana does not replace any of these in InfluxQL
    assert unexpanded(res) == [
        "$__timeFilter",
        "$__range_s",
        "$__rate_interval",
        "$__range",
        "${__range_ms}",
        "${__from:date:YYYY-MM}",
        "$nosuchvar",
        "[[other]]",
        "${timeFilter}",
    ]


def test_unexpanded_ignores_escaped_dollars() -> None:
    res = expand('WHERE "k" =~ /^$v$/ AND $timeFilter', HOUR, variables={"v": Variable("v", ["a$b", "c"], multi=True)})
    assert res == r'WHERE "k" =~ /^(a\$b|c)$/ AND time >= 1700000000000ms and time <= 1700003600000ms'
    assert unexpanded(res) == []


# ---------------------------------------------------------------- template variables

CELLS = ["8a1fa4c580c7fff", "8a1fa4c580d7fff"]


def test_escape_regex() -> None:
    # @grafana/data escapeRegex: the InfluxQL delimiter "/" is escaped too, "-" is not
    assert escape_regex(r"a.b/c|d(e)[f]{g}^$*+?\-") == r"a\.b\/c\|d\(e\)\[f\]\{g\}\^\$\*\+\?\\-"


def test_single_value() -> None:
    # datasource.test.ts "should return the value as it is"
    assert interpolate_variables("my query $tempVar", {"tempVar": Variable("tempVar", ["normalValue"])}) == (
        "my query normalValue"
    )


@pytest.mark.parametrize(("query", "expected"), [
    # datasource.test.ts interpolateQueryExpr: escaped only inside a =~ or !~ regex literal
    ("select atan(z/sqrt(3.14)), that where path =~ /$tempVar/",
     r"select atan(z/sqrt(3.14)), that where path =~ /\/special\/path/"),
    ("select atan(z/sqrt(3.14)), that where path !~ /^$tempVar$/",
     r"select atan(z/sqrt(3.14)), that where path !~ /^\/special\/path$/"),
    ("select that where path = '$tempVar'", "select that where path = '/special/path'"),
])  # fmt: skip
def test_single_value_escaped_only_in_regex(query: str, expected: str) -> None:
    assert interpolate_variables(query, {"tempVar": Variable("tempVar", ["/special/path"])}) == expected


def test_single_value_other_regex_in_query() -> None:
    # datasource.test.ts: "... text is contained between two / but not a regex" (PR #100762, Grafana 11.4.3+)
    q = (
        'select value where ("tag"::tag =~ /value/) AND where other = $tempVar $timeFilter GROUP BY '
        "time($__interval) tz('Europe/London')"
    )
    for value in ("testmatch", "a.b/c"):
        assert interpolate_variables(q, {"tempVar": Variable("tempVar", [value])}) == q.replace("$tempVar", value)


def test_single_value_regex_detection_is_per_query() -> None:
    # interpolateQueryExpr looks for "$name" in the query's =~ / !~ literals: [[name]] and ${name} do not count,
    # and once "$name" is in one, every occurrence of the variable in the query is escaped
    v = {"h": Variable("h", ["a.b"])}
    assert interpolate_variables('"k" =~ /^[[h]]$/ OR "k" =~ /^${h}$/', v) == '"k" =~ /^a.b$/ OR "k" =~ /^a.b$/'
    assert interpolate_variables('"k" =~ /^[[h]]$/ OR "k" =~ /^$h$/ OR "j" = \'$h\'', v) == (
        r""""k" =~ /^a\.b$/ OR "k" =~ /^a\.b$/ OR "j" = 'a\.b'"""
    )


def test_from_regex_is_not_a_match_literal() -> None:
    # only =~ / !~ literals count for single values; multi-values are always escaped
    q = "SELECT * FROM /^$m$/"
    assert interpolate_variables(q, {"m": Variable("m", ["a.b"])}) == "SELECT * FROM /^a.b$/"
    assert interpolate_variables(q, {"m": Variable("m", ["a.b"], multi=True)}) == r"SELECT * FROM /^(a\.b)$/"


@pytest.mark.parametrize(("value", "query", "expected"), [
    # datasource.test.ts: numbers (parseFloat) are never escaped
    ("12.2", "select that where path = '$tempVar'", "select that where path = '12.2'"),
    ("1.0", "select value / $tempVar from /^measurement$/", "select value / 1.0 from /^measurement$/"),
    # parseFloat reads a prefix: an IPv4 address is "a number", so it is not escaped even in a regex
    ("10.0.0.1", '"ip" =~ /^$tempVar$/', '"ip" =~ /^10.0.0.1$/'),
])  # fmt: skip
def test_numbers_not_escaped(value: str, query: str, expected: str) -> None:
    assert interpolate_variables(query, {"tempVar": Variable("tempVar", [value])}) == expected


def test_chained_regex_variables_float_and_url() -> None:
    # datasource.test.ts "should render chained regex variables with floating point number and url"
    q = 'SELECT sum("piece_count") FROM "rp"."pdata" WHERE diameter <= $maxSED AND agent_url =~ /^$var1$/'
    variables = {
        "var1": Variable("var1", ["https://aaaa-aa-aaa.bbb.ccc.ddd:8443/ggggg"]),
        "maxSED": Variable("maxSED", ["8.1"]),
    }
    assert interpolate_variables(q, variables) == (
        'SELECT sum("piece_count") FROM "rp"."pdata" WHERE diameter <= 8.1 AND '
        r"agent_url =~ /^https:\/\/aaaa-aa-aaa\.bbb\.ccc\.ddd:8443\/ggggg$/"
    )


def test_multi_value_always_escaped() -> None:
    # datasource.test.ts "should escape the value **always** if the variable is a multi-value variable"
    v = {"tempVar": Variable("tempVar", ["/special/path", "/some/other/path"], multi=True)}
    assert interpolate_variables("select that where path = '$tempVar'", v) == (
        r"select that where path = '(\/special\/path|\/some\/other\/path)'"
    )


@pytest.mark.parametrize(("values", "expected"), [
    (["a.b", "x/y"], r'"cell" =~ /^(a\.b|x\/y)$/'),
    (["a.b"], r'"cell" =~ /^(a\.b)$/'),  # one selected value of a multi variable: still (...)
    (["p|q", "f(1)", "[z]", "s*", "c+d?", "^$"], r'"cell" =~ /^(p\|q|f\(1\)|\[z\]|s\*|c\+d\?|\^\$)$/'),
    (CELLS, '"cell" =~ /^(8a1fa4c580c7fff|8a1fa4c580d7fff)$/'),
    (["12", "x.y"], r'"cell" =~ /^(12|x\.y)$/'),
])  # fmt: skip
def test_multi_value_regex(values: list[str], expected: str) -> None:
    v = {"cell": Variable("cell", values, multi=True, include_all=True)}
    assert interpolate_variables('"cell" =~ /^$cell$/', v) == expected
    assert interpolate_variables('"cell" =~ /^[[cell]]$/', v) == expected
    assert interpolate_variables('"cell" =~ /^${cell}$/', v) == expected


def test_include_all_with_custom_all_value() -> None:
    # template_srv.ts: a custom allValue is inserted as is (not escaped), except for :text and :percentencode
    v = {"cell": Variable("cell", CELLS, multi=True, include_all=True, all_selected=True, all_value=".*")}
    assert interpolate_variables('"cell" =~ /^$cell$/', v) == '"cell" =~ /^.*$/'
    assert interpolate_variables("${cell:regex} ${cell:text} ${cell:percentencode}", v) == ".* All .%2A"


def test_include_all_without_all_value() -> None:
    # getAllValue: all option values, then formatted like a multi-value selection
    v = {"cell": Variable("cell", ["a.b", "c"], multi=True, include_all=True, all_selected=True)}
    assert interpolate_variables('"cell" =~ /^$cell$/', v) == r'"cell" =~ /^(a\.b|c)$/'
    assert interpolate_variables("${cell:text} ${cell:csv}", v) == "All a.b,c"


def test_include_all_single_value_variable() -> None:
    # datasource.test.ts "should escape and join with the pipe even the variable is not multi-value"
    values = ["/special/path", "/some/other/path"]
    v = {"tempVar": Variable("tempVar", values, include_all=True, all_selected=True, all_value="")}
    assert interpolate_variables("select that where path =~ /$tempVar/", v) == (
        r"select that where path =~ /(\/special\/path|\/some\/other\/path)/"
    )
    # "... should return the escaped value if the value wrapped in regex 3"
    v = {"tempVar": Variable("tempVar", ["env", "env2", "env3"], include_all=True, all_selected=True)}
    assert interpolate_variables("select atan(z/sqrt(3.14)), thing from path =~ /^($tempVar)$/", v) == (
        "select atan(z/sqrt(3.14)), thing from path =~ /^((env|env2|env3))$/"
    )
    # outside a regex the array is not escaped and becomes "a,b" (JavaScript's Array toString)
    assert interpolate_variables("x = '$tempVar'", v) == "x = 'env,env2,env3'"


def test_raw_format() -> None:
    # smartzone-living-lab.json: the category variable's query uses ${use_case:raw} inside a regex
    q = "SHOW MEASUREMENTS WITH MEASUREMENT =~ /^(${use_case:raw})$/"
    v = {"use_case": Variable("use_case", ["energy|weather"])}
    assert interpolate_variables(q, v) == "SHOW MEASUREMENTS WITH MEASUREMENT =~ /^(energy|weather)$/"
    assert interpolate_variables("SHOW MEASUREMENTS WITH MEASUREMENT =~ /^($use_case)$/", v) == (
        r"SHOW MEASUREMENTS WITH MEASUREMENT =~ /^(energy\|weather)$/"
    )
    v = {"c": Variable("c", ["a.b", "x/y"], multi=True)}
    assert interpolate_variables("${c:raw} [[c:raw]]", v) == "a.b,x/y a.b,x/y"


@pytest.mark.parametrize(("fmt", "values", "expected"), [
    # scenes formatRegistry.test.ts (values as selected on a variable named "server")
    ("lucene", ["foo bar", "baz"], r'("foo\ bar" OR "baz")'),
    ("glob", ["foo"], "foo"),
    ("glob", ["AA", "BB", "C.*"], "{AA,BB,C.*}"),
    ("text", ["test", "test2"], "test + test2"),
    ("regex", ["test."], r"test\."),
    ("regex", ["test.", "test2"], r"(test\.|test2)"),
    ("pipe", ["test", "test2"], "test|test2"),
    ("distributed", ["test"], "test"),
    ("distributed", ["test", "test2"], "test,server=test2"),
    ("csv", ["test", "test2"], "test,test2"),
    ("json", ["test", "12"], '["test","12"]'),
    ("percentencode", ["foo()bar BAZ", "test2"], "%7Bfoo%28%29bar%20BAZ%2Ctest2%7D"),
    ("singlequote", ["test", "test'2"], r"'test','test\'2'"),
    ("doublequote", ["test", 'test"2'], r'"test","test\"2"'),
    ("sqlstring", ["test", "test'value2", 'test"value3'], r"""'test','test''value2','test\"value3'"""),
    ("join", ["hello", "world"], "hello,world"),
    ("join: | ", ["hello", "world"], "hello | world"),
    ("uriencode", ["/p?q=foo()bar BAZ", "x"], "%7B/p?q=foo%28%29bar%20BAZ,x%7D"),
    ("nosuchformat", ["a", "b"], "{a,b}"),  # unknown formats fall back to glob
])  # fmt: skip
def test_formats_multi(fmt: str, values: list[str], expected: str) -> None:
    v = {"server": Variable("server", values, multi=True)}
    assert interpolate_variables("${server:%s}" % fmt, v) == expected  # noqa: UP031


@pytest.mark.parametrize(("fmt", "value", "expected"), [
    ("lucene", "foo bar", r"foo\ bar"),
    ("lucene", "-1", "-1"),
    ("lucene", "-test", r"\-test"),
    ("text", "v", "v"),
    ("json", "test", "test"),
    ("csv", "test", "test"),
    ("singlequote", "test", "'test'"),
    ("doublequote", "test", '"test"'),
    ("sqlstring", "test'value", "'test''value'"),
    ("sqlstring", 'test"value', r"""'test\"value'"""),
    ("join", "hello", "hello"),
    ("uriencode", "/any-path/any-second-path?query=foo()bar BAZ", "/any-path/any-second-path?query=foo%28%29bar%20BAZ"),
    ("regex", "a.b", r"a\.b"),
])  # fmt: skip
def test_formats_single(fmt: str, value: str, expected: str) -> None:
    assert interpolate_variables("${server:%s}" % fmt, {"server": Variable("server", [value])}) == expected  # noqa: UP031


def test_text_format_uses_option_text() -> None:
    # a custom option "Graaf van Egmontstraat : gw-egmont": the value goes into queries, the text only via :text
    v = {"gw": Variable("gw", ["gw-egmont"], texts=["Graaf van Egmontstraat"])}
    assert interpolate_variables("\"gateway\" = '$gw' -- ${gw:text}", v) == (
        "\"gateway\" = 'gw-egmont' -- Graaf van Egmontstraat"
    )


def test_variable_validation() -> None:
    with pytest.raises(ValueError, match="exactly one value"):
        Variable("x", ["a", "b"])
    with pytest.raises(ValueError, match="include_all"):
        Variable("x", ["a"], multi=True, all_selected=True)
    with pytest.raises(ValueError, match="named"):
        interpolate_variables("$x", {"x": Variable("y", ["a"])})


def test_expand_variables_before_macros() -> None:
    # smartzone-operations.json panel query shape, with "All" of gateway and its allValue
    q = (
        'SELECT mean("rssi") AS "rssi" FROM "radio" WHERE $timeFilter AND "rx_gateway" =~ /^$gateway$/ '
        'GROUP BY time($__interval), "rx_gateway" fill(none)'
    )
    gw = Variable("gateway", ["gw-egmont", "gw-kloosterstraat"], multi=True, include_all=True)
    res = expand(q, rng(hours=24), variables={"gateway": gw})
    assert res == (
        'SELECT mean("rssi") AS "rssi" FROM "radio" WHERE time >= 1700000000000ms and time <= '
        '1700086400000ms AND "rx_gateway" =~ /^(gw-egmont|gw-kloosterstraat)$/ GROUP BY time(1m), '
        '"rx_gateway" fill(none)'
    )
    assert unexpanded(res) == []


# ---------------------------------------------------------------- against InfluxDB 1.6 (tests/conftest.py influxd)


def test_expanded_queries_run_on_influxdb(influxd) -> None:
    base = influxd.url
    db = "macros_test"
    cells = ["a.b", "axb", "x/y", "p|q", "f(1)", "plain"]
    lines = "\n".join(f"m,cell={c} v={i} {1700000000000 + i * 1000}" for i, c in enumerate(cells))
    with httpx.Client(base_url=base, timeout=10) as client:
        client.post("/query", params={"q": f'CREATE DATABASE "{db}"'}).raise_for_status()
        client.post("/write", params={"db": db, "precision": "ms"}, content=lines).raise_for_status()

        def series(query: str, variables: dict[str, Variable]) -> set[str]:
            q = expand(query, HOUR, variables=variables)
            assert unexpanded(q) == []
            body = client.get("/query", params={"db": db, "epoch": "ms", "q": q}).raise_for_status().json()
            result = body["results"][0]
            assert "error" not in result, (q, result)
            return {s["tags"]["cell"] for s in result.get("series", [])}

        query = (
            'SELECT count("v") FROM "m" WHERE "cell" =~ /^$cell$/ AND $timeFilter GROUP BY time($__interval), "cell"'
        )
        multi = Variable("cell", ["a.b", "x/y", "p|q", "f(1)"], multi=True, include_all=True)
        assert series(query, {"cell": multi}) == {"a.b", "x/y", "p|q", "f(1)"}  # not "axb": the dot is literal
        single = Variable("cell", ["x/y"])
        assert series(query, {"cell": single}) == {"x/y"}
        everything = Variable("cell", cells, multi=True, include_all=True, all_selected=True, all_value=".*")
        assert series(query, {"cell": everything}) == set(cells)
