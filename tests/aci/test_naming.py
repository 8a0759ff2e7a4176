"""Container group names and ownership tags."""

from __future__ import annotations

import itertools

import pytest

from providers.aci import naming
from vk_operator.provider import PodRef

LONG_POD = "checkout-api-" + "x" * 60
DOTTED = "web.v2"


@pytest.mark.parametrize(
    ("namespace", "name", "expected"),
    [
        ("default", "nginx", "default-nginx"),  # azure-aci's name when it is unambiguous
        ("shop", "web-7d4b9c8f5d-x2x7k", "shop-web-7d4b9c8f5d-x2x7k"),
        ("team-a", "web", f"team-a-web-{naming.name_hash('team-a', 'web')}"),  # hyphenated namespace
        ("team", "a-web", "team-a-web"),  # ... so these two differ
        ("shop", DOTTED, f"shop-web-v2-{naming.name_hash('shop', DOTTED)}"),  # '.' is not allowed
        ("shop", "a--b", f"shop-a-b-{naming.name_hash('shop', 'a--b')}"),  # no '--'
        ("shop", LONG_POD, f"shop-checkout-api-{'x' * 32}-{naming.name_hash('shop', LONG_POD)}"),
        ("s", "p", "s-p"),
    ],
)
def test_container_group_name(namespace: str, name: str, expected: str) -> None:
    got = naming.container_group_name(namespace, name)
    assert got == expected
    assert naming.is_valid_group_name(got)
    assert len(got) <= 63


def test_hash_covers_both_with_a_separator() -> None:
    assert naming.name_hash("a-b", "c") != naming.name_hash("a", "b-c")
    assert naming.name_hash("ab", "c") != naming.name_hash("a", "bc")


def test_names_are_distinct_for_distinct_pairs() -> None:
    """Ambiguous splits, dots against hyphens, and long names sharing their first 50 characters."""
    parts = ["a", "a-b", "b", "b-c", "c", "a.b", "b.c", "x" * 63, "x" * 62 + "y"]
    pairs = [(ns, pod) for ns, pod in itertools.product(parts, repeat=2) if "." not in ns and len(ns) <= 63]
    pairs += [("shop", f"{'w' * 60}-{i}") for i in range(50)]
    names = {naming.container_group_name(ns, pod): (ns, pod) for ns, pod in pairs}
    assert len(names) == len(pairs)
    assert all(naming.is_valid_group_name(name) for name in names)


@pytest.mark.parametrize(
    ("name", "valid"),
    [("a", True), ("a-1", True), ("-a", False), ("a-", False), ("A", False), ("a.b", False), ("a--b", False),
     ("a" * 63, True), ("a" * 64, False), ("", False)],
)  # fmt: skip
def test_is_valid_group_name(name: str, valid: bool) -> None:
    assert naming.is_valid_group_name(name) is valid


REF = PodRef("shop", "web-0", "0b9f3c1e-1111-2222-3333-444455556666")


def test_group_tags_round_trip() -> None:
    tags = naming.group_tags(REF, "vk-aci", {"team": "platform", "VK-Operator.Node": "other"})
    assert tags == {
        "team": "platform",  # the config's; an ownership key among them is dropped
        "vk-operator.node": "vk-aci",
        "vk-operator.namespace": "shop",
        "vk-operator.pod": "web-0",
        "vk-operator.uid": REF.uid,
    }
    for key, value in tags.items():
        naming.check_tag(key, value)
    assert naming.ref_from_tags(tags) == REF
    assert naming.owned_by(tags, "vk-aci")
    assert not naming.owned_by(tags, "vk-other")


@pytest.mark.parametrize(
    ("tags", "ref", "owned"),
    [
        (None, None, False),
        ({}, None, False),
        ({"team": "platform"}, None, False),  # made by hand
        (
            {"NodeName": "vk-aci", "Namespace": "shop", "PodName": "web-0", "UID": "u"},
            None,
            False,
        ),  # azure-aci's
        (
            {"vk-operator.node": "vk-aci", "vk-operator.namespace": "shop", "vk-operator.pod": "web-0"},
            None,
            False,
        ),
        (
            {
                "vk-operator.node": "vk-aci",
                "vk-operator.namespace": "shop",
                "vk-operator.pod": "w",
                "vk-operator.uid": "",
            },
            None,
            False,
        ),
        (
            # ARM tag names are case-insensitive and may come back in another case
            {
                "VK-Operator.Node": "vk-aci",
                "Vk-Operator.Namespace": "shop",
                "vk-operator.POD": "w",
                "vk-operator.uid": "u",
            },
            PodRef("shop", "w", "u"),
            True,
        ),
        (
            {"vk-operator.namespace": "shop", "vk-operator.pod": "w", "vk-operator.uid": "u"},  # no node tag
            PodRef("shop", "w", "u"),
            False,
        ),
    ],
)
def test_ref_from_tags_and_owned_by(tags: dict[str, str] | None, ref: PodRef | None, owned: bool) -> None:
    assert naming.ref_from_tags(tags) == ref
    assert naming.owned_by(tags, "vk-aci") is owned


@pytest.mark.parametrize(
    ("key", "value", "problem"),
    [
        ("team", "platform", None),
        ("cost:center", "42", None),
        ("a/b", "v", "forbids '/'"),
        ("a<b>", "v", "forbids '<>'"),
        ("100%", "v", "forbids '%'"),
        ("", "v", "1 to 512"),
        ("k" * 513, "v", "1 to 512"),
        ("k", "v" * 257, "longer than 256"),
    ],
)
def test_check_tag(key: str, value: str, problem: str | None) -> None:
    if problem is None:
        naming.check_tag(key, value)
    else:
        with pytest.raises(ValueError, match=problem):
            naming.check_tag(key, value)


def test_longest_kubernetes_names_fit_the_tag_values() -> None:
    ref = PodRef("n" * 63, "p" * 253, "u" * 36)
    tags = naming.group_tags(ref, "v" * 253)
    assert naming.ref_from_tags(tags) == ref
