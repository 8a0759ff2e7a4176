"""Query parameters of /containerLogs, parsed and validated like the kubelet's PodLogOptions."""

from __future__ import annotations

import datetime

import pytest

from vk_operator.domain.logs import LogOptions
from vk_operator.kubelet_api.params import SINCE_FOREVER, BadRequest, parse_log_options


def test_defaults_and_every_option() -> None:
    assert parse_log_options({}) == LogOptions()
    options = parse_log_options(
        {
            "follow": "true",
            "previous": "1",
            "timestamps": "True",
            "tailLines": "10",
            "limitBytes": "500",
            "sinceSeconds": "30",
            "stream": "All",
        }
    )
    assert options == LogOptions(
        follow=True, previous=True, timestamps=True, tail_lines=10, limit_bytes=500, since_seconds=30
    )


def test_since_time_rfc3339_variants() -> None:
    utc = datetime.UTC
    assert parse_log_options({"sinceTime": "2024-05-06T07:08:09Z"}).since_time == datetime.datetime(
        2024, 5, 6, 7, 8, 9, tzinfo=utc
    )
    with_fraction = parse_log_options({"sinceTime": "2024-05-06T07:08:09.5+02:00"}).since_time
    assert with_fraction == datetime.datetime(2024, 5, 6, 5, 8, 9, 500000, tzinfo=utc)


def test_since_seconds_is_relative_to_now() -> None:
    now = datetime.datetime(2024, 1, 1, 12, 0, tzinfo=datetime.UTC)
    assert parse_log_options({"sinceSeconds": "90"}).since(now) == now - datetime.timedelta(seconds=90)
    assert parse_log_options({}).since(now) is None


def test_legacy_tail_parameter() -> None:
    assert parse_log_options({"tail": "5"}).tail_lines == 5
    assert parse_log_options({"tail": "all"}).tail_lines is None
    assert parse_log_options({"tail": "5", "tailLines": "2"}).tail_lines == 2


def test_false_values_and_bare_flags() -> None:
    assert parse_log_options({"follow": "false", "timestamps": "0"}) == LogOptions()
    assert parse_log_options({"follow": ""}).follow is True


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"tailLines": "-1"}, "tailLines: -1 (must be >= 0)"),
        ({"tailLines": "ten"}, "tailLines: 'ten' (expected an integer)"),
        ({"limitBytes": "0"}, "limitBytes: 0 (must be >= 1)"),
        ({"sinceSeconds": "0"}, "sinceSeconds: 0 (must be >= 1)"),
        ({"sinceTime": "yesterday"}, "sinceTime: 'yesterday' (expected RFC 3339)"),
        ({"sinceTime": "2024-01-01T00:00:00"}, "sinceTime"),  # no zone: ambiguous
        (
            {"sinceSeconds": "5", "sinceTime": "2024-01-01T00:00:00Z"},
            "at most one of sinceTime or sinceSeconds",
        ),
        ({"follow": "maybe"}, "follow: 'maybe' (expected true or false)"),
        ({"stream": "Both"}, "stream: 'Both'"),
        ({"stream": "Stderr", "tailLines": "3"}, "tailLines is only supported with stream=All"),
    ],
)
def test_invalid_values_say_which_parameter_and_why(query: dict[str, str], message: str) -> None:
    with pytest.raises(BadRequest, match=None) as caught:
        parse_log_options(query)
    assert message in str(caught.value)


INT64_MAX = 2**63 - 1


@pytest.mark.parametrize("name", ["tailLines", "limitBytes", "sinceSeconds"])
@pytest.mark.parametrize("value", [str(INT64_MAX + 1), str(10**30), "9" * 5000])
def test_integers_beyond_int64_are_refused_naming_the_parameter(name: str, value: str) -> None:
    with pytest.raises(BadRequest) as caught:
        parse_log_options({name: value})
    assert f"invalid value for {name}: " in str(caught.value)
    assert f"(must be <= {INT64_MAX})" in str(caught.value)
    assert len(str(caught.value)) < 200  # a megabyte of digits is not echoed back


def test_integers_are_decimal_int64_as_go_parses_them() -> None:
    assert parse_log_options({"tailLines": str(INT64_MAX)}).tail_lines == INT64_MAX
    assert parse_log_options({"limitBytes": str(INT64_MAX)}).limit_bytes == INT64_MAX
    assert parse_log_options({"tailLines": "+5"}).tail_lines == 5
    assert parse_log_options({"tailLines": "007"}).tail_lines == 7
    for raw in ("1_000", "\u0661\u0662", "0x10", "1e3", "5.0", "", "+", "--1"):
        with pytest.raises(BadRequest, match=r"tailLines: .* \(expected an integer\)"):
            parse_log_options({"tailLines": raw})
    with pytest.raises(BadRequest, match=r"tailLines: '-9+\.\.\.' \(must be >= 0\)"):
        parse_log_options({"tailLines": "-" + "9" * 50})


def test_a_since_seconds_older_than_any_container_asks_for_everything() -> None:
    now = datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)
    for raw in (str(INT64_MAX), str(SINCE_FOREVER + 1)):
        options = parse_log_options({"sinceSeconds": raw})
        assert options.since_seconds is None and options.since(now) is None
    kept = parse_log_options({"sinceSeconds": str(SINCE_FOREVER)})
    assert kept.since(now) == now - datetime.timedelta(seconds=SINCE_FOREVER)  # representable
