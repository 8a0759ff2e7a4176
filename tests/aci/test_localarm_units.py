"""Pieces of the local ARM server on their own: the spec compiler, the tiny shell, throttling."""

from __future__ import annotations

import math
from typing import Any

import pytest

from providers.aci.localarm import load_example, load_spec, shape_differences
from providers.aci.localarm.shell import (
    LazyTrace,
    ShellContext,
    parse,
    run_script,
    tokenize,
    top_level_program,
)
from providers.aci.localarm.spec import SpecDocument
from providers.aci.localarm.throttle import TokenBucket
from providers.swagger import SchemaValidator, compile_definition


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    return load_spec()


def validator(spec: dict[str, Any], name: str, direction: str) -> SchemaValidator:
    return SchemaValidator(compile_definition(spec, name, direction))  # type: ignore[arg-type]


def test_every_stored_example_validates(spec: dict[str, Any]) -> None:
    doc = SpecDocument(spec)
    checked = 0
    for op, name in doc.iter_examples():
        example = load_example(name)
        if op.body is not None:
            assert op.body.validator.errors(example["parameters"][op.body.name]) == [], name
        for status, response in example["responses"].items():
            declared, check = op.response_validator(int(status))
            assert declared, (name, status)
            if check is None:
                assert "body" not in response
            else:
                assert check.errors(response["body"]) == [], (name, status)
            checked += 1
    assert checked == 10  # 7 examples; create has 200 and 201, delete 200, 202 and 204


def test_secrets_are_optional_in_responses_only(spec: dict[str, Any]) -> None:
    analytics = {"workspaceId": "w"}  # workspaceKey is required but x-ms-secret
    assert validator(spec, "LogAnalytics", "response").errors(analytics) == []
    assert validator(spec, "LogAnalytics", "request").errors(analytics) == [
        "<root>: 'workspaceKey' is a required property"
    ]


def test_read_only_properties_in_requests_are_accepted_with_any_value(spec: dict[str, Any]) -> None:
    state = {"provisioningState": 42, "containers": [], "osType": "Linux", "instanceView": "anything"}
    assert validator(spec, "ContainerGroupProperties", "request").errors({"properties": state}) == []
    errors = validator(spec, "ContainerGroupProperties", "response").errors({"properties": state})
    assert errors == [
        "properties/instanceView: 'anything' is not of type 'object'",
        "properties/provisioningState: 42 is not of type 'string'",
    ]


def test_enums_formats_and_additional_properties(spec: dict[str, Any]) -> None:
    port = validator(spec, "Port", "response")
    assert port.errors({"port": 80, "protocol": "SCTP"}) == []  # modelAsString: extensible
    assert port.errors({"port": 2**31}) == ["port: 2147483648 is not a 'int32'"]
    assert port.errors({"port": 80.5}) == ["port: 80.5 is not of type 'integer'"]
    assert port.errors({"port": 80, "name": "http"}) == [
        "<root>: Additional properties are not allowed ('name' was unexpected)"
    ]
    identity = validator(spec, "ContainerGroupIdentity", "request")
    assert identity.errors({"type": "Nobody"})[0].startswith(
        "type: 'Nobody' is not one of"
    )  # modelAsString: false
    event = validator(spec, "Event", "response")
    assert event.errors({"firstTimestamp": "2017-08-08T00:09:01Z"}) == []
    assert event.errors({"firstTimestamp": "2017-08-08T00:09:01.123456789Z"}) == []
    assert event.errors({"firstTimestamp": "yesterday"}) == [
        "firstTimestamp: 'yesterday' is not a 'date-time'"
    ]
    tags = validator(spec, "Resource", "request")
    assert tags.errors({"tags": {"a": "b"}}) == []
    assert tags.errors({"tags": {"a": 1}}) == ["tags/a: 1 is not of type 'string'"]
    assert tags.errors({"id": "read-only, ignored", "location": None}) == [
        "location: None is not of type 'string'"
    ]


def test_recursive_definitions_compile(spec: dict[str, Any]) -> None:
    error = validator(spec, "CloudError", "response")
    nested = {"error": {"code": "A", "details": [{"code": "B", "details": [{"code": 3}]}]}}
    assert error.errors(nested) == ["error/details/0/details/0/code: 3 is not of type 'string'"]


def test_shape_differences() -> None:
    expected = {"a": {"b": 1, "c": [1, 2]}, "d": "x"}
    assert shape_differences(expected, {"a": {"b": 2, "c": [1], "e": 0}}) == [
        "length a/c: expected 2, got 1",
        "extra a/e",
        "missing d",
    ]
    assert shape_differences(
        expected, {"a": {"b": "1", "c": [1, 2]}, "d": "y"}, compare_values=lambda p: p == "d"
    ) == [
        "type a/b: expected number, got string",
        "value d: expected 'x', got 'y'",
    ]
    assert shape_differences(expected, {"a": {}, "d": "x"}, ignore=["a/*"]) == []


# --- the shell -------------------------------------------------------------------------------


def trace(argv: list[str], env: dict[str, str] | None = None, horizon: float = 1e6) -> LazyTrace:
    result = LazyTrace(top_level_program(argv, ShellContext(env=dict(env or {}), hostname="h")))
    result.advance(horizon)
    return result


def lines(t: LazyTrace) -> list[tuple[float, str]]:
    return [(line.offset, line.text) for line in t.lines]


def test_script_timeline() -> None:
    t = trace(
        ["/bin/sh", "-c", "echo a; sleep 1.5; echo \"b $NAME\" 'c $NAME'; exit 4; echo never"], {"NAME": "x"}
    )
    assert lines(t) == [(0.0, "a"), (1.5, "b x c $NAME")]
    assert (t.end, t.exit_code) == (1.5, 4)


def test_loops_are_lazy_and_status_flows() -> None:
    t = trace(["sh", "-c", "while true; do echo tick; sleep 2; done"], horizon=5)
    assert [text for _, text in lines(t)] == ["tick"] * 3 and not t.finished
    t.advance(7)
    assert len(t.lines) == 4
    t = trace(["sh", "-c", "for i in 1 2 3; do echo $i; done; false; echo $?; false || exit 9"])
    assert [text for _, text in lines(t)] == ["1", "2", "3", "1"] and t.exit_code == 9
    t = trace(["sh", "-c", 'X=1; [ "$X" -lt 2 ] && echo small; nosuch; echo $?'])
    assert [text for _, text in lines(t)] == ["small", "sh: 1: nosuch: not found", "127"]


def test_processes_that_never_end() -> None:
    spin = trace(["sh", "-c", "while true; do :; done"])
    assert spin.hung and not spin.finished
    server = trace(["nginx", "-g", "daemon off;"])
    assert server.hung and lines(server) == [(0.0, "localarm: nginx -g daemon off; started (run 0)")]
    assert trace(["sleep", "infinity"]).hung
    assert trace(["sleep", "2"]).end == 2.0
    assert trace(["sh", "-c", 'echo "unterminated']).exit_code == 2


def test_run_index_lets_a_script_fail_first() -> None:
    script = ["sh", "-c", "[ $LOCALARM_RUN_INDEX -lt 2 ] && exit 1; sleep infinity"]
    assert [trace(script, {"LOCALARM_RUN_INDEX": str(i)}).exit_code for i in range(3)] == [1, 1, None]


def test_server_process_knobs() -> None:
    env = {"LOCALARM_RUN_SECONDS": "3", "LOCALARM_EXIT_CODE": "5", "LOCALARM_LOG_EVERY": "1"}
    t = trace([], env)
    assert [text for _, text in lines(t)] == [
        "localarm: process started (run 0)",
        "localarm: tick 1",
        "localarm: tick 2",
        "localarm: tick 3",
        "localarm: exiting with code 5",
    ]
    assert (t.end, t.exit_code) == (3.0, 5)
    flaky = {"LOCALARM_FAIL_TIMES": "1", "LOCALARM_RUN_INDEX": "0"}
    assert trace([], flaky).exit_code == 1
    assert trace([], {**flaky, "LOCALARM_RUN_INDEX": "1"}).hung


def test_tokenizer_and_parser() -> None:
    words = [w for w in tokenize("a 'b c' \"d$E\" f\\ g ${H:-i};") if not isinstance(w, str)]
    assert [w.parts for w in words][:3] == [[("lit", "a")], [("lit", "b c")], [("lit", "d"), ("var", "E")]]
    ctx = ShellContext(env={})
    out: list[str] = []
    program = run_script("echo ${MISSING:-fallback} f\\ g", ctx)
    try:
        while True:
            op = next(program)
            if op[0] == "out":
                out.append(op[1])
    except StopIteration:
        pass
    assert out == ["fallback f g\n"]
    with pytest.raises(Exception, match="unexpected"):
        parse("do echo")


# --- throttling ------------------------------------------------------------------------------


def test_token_bucket() -> None:
    bucket = TokenBucket(rate=2.0, burst=3, now=0.0)
    taken = [bucket.take(0.0, 2.0, 3) for _ in range(4)]
    assert [d.allowed for d in taken] == [True, True, True, False]
    assert [d.remaining for d in taken] == [2, 1, 0, 0]
    assert taken[-1].retry_after == 1
    assert bucket.take(0.5, 2.0, 3).allowed  # refilled one token
    assert not bucket.take(0.5, 2.0, 3).allowed
    assert bucket.take(100.0, 2.0, 3).remaining == 2  # never above the burst
    assert TokenBucket(0.0, 0, 0.0).take(0.0, 0.0, 0).retry_after == 3600
    assert math.isclose(bucket.tokens, 2.0)
