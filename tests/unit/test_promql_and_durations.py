from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rebalancer.core import promql
from rebalancer.core.durations import format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "expected"),
    [("30s", timedelta(seconds=30)), ("5m", timedelta(minutes=5)), ("1h30m", timedelta(minutes=90)),
     ("250ms", timedelta(milliseconds=250)), ("2d", timedelta(days=2)), ("1w", timedelta(weeks=1))],
)
def test_durations_parse_in_prometheus_syntax(text, expected):
    assert parse_duration(text) == expected


@pytest.mark.parametrize("bad", ["", "5", "5 minutes", "m5", "5m1h", "-5m", "1.5h", "5M"])
def test_invalid_durations_are_refused_with_the_text(bad):
    with pytest.raises(ValueError, match="duration"):
        parse_duration(bad)


@given(st.integers(min_value=1, max_value=10**10))
def test_formatting_then_parsing_a_duration_gives_it_back(milliseconds):
    delta = timedelta(milliseconds=milliseconds)
    assert parse_duration(format_duration(delta)) == delta


def test_default_cpu_query_reads_cadvisor_rate_over_the_window():
    query = promql.render(promql.DEFAULT_CPU_TEMPLATE, namespace="posthog", deployment="ingestion-consumer",
                          container="ingestion-consumer", window=timedelta(minutes=5))
    assert query == ('sum by (pod) (rate(container_cpu_usage_seconds_total'
                     '{namespace="posthog", container="ingestion-consumer"}[5m]))')


@pytest.mark.parametrize(
    ("value", "escaped"),
    [('a"b', 'a\\"b'), ("a\\b", "a\\\\b"), ("a\nb", "a\\nb"), ('x"} or vector(1) #', 'x\\"} or vector(1) #')],
)
def test_values_are_escaped_so_they_stay_inside_the_string(value, escaped):
    assert promql.escape_string(value) == escaped


@given(st.text())
def test_no_value_can_close_the_string_literal(value):
    escaped = promql.escape_string(value)
    # Walk the escaped text as PromQL's lexer would: an unescaped quote or newline never appears.
    i = 0
    while i < len(escaped):
        if escaped[i] == "\\":
            i += 2
            continue
        assert escaped[i] not in ('"', "\n")
        i += 1


def test_unknown_placeholders_are_refused():
    with pytest.raises(ValueError, match=r"\$pod"):
        promql.check_template('sum by (pod) (x{pod="$pod"})')


def test_dollar_signs_that_are_not_placeholders_are_kept():
    query = promql.render('sum by (pod) (x{namespace="$namespace", pod=~".*-worker$"})', namespace="n",
                          deployment="d", container="c", window=timedelta(minutes=1))
    assert query == 'sum by (pod) (x{namespace="n", pod=~".*-worker$"})'
