"""The filter parser, property-tested: any syntax tree rendered as text parses back to itself, and no
input makes the parser fail with anything but INVALID_PARAMETER_VALUE."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.tracking.domain.search_grammar import (
    And,
    Comparison,
    Or,
    OrderKey,
    parse_filter,
    parse_order_by,
)
from shared.core.errors import InvalidParameter

ENTITIES = ("metrics", "params", "tags", "attributes", "datasets")
_KEYWORDS = {"AND", "OR", "NOT", "IN", "LIKE", "ILIKE", "IS", "NULL"}
_LETTERS = "abcxyzABCXYZ_"


def _word(tail_alphabet: str):
    return st.builds(str.__add__, st.sampled_from(_LETTERS), st.text(alphabet=tail_alphabet, max_size=12)).filter(
        lambda k: k.upper() not in _KEYWORDS
    )


BARE_KEY = _word(_LETTERS + "0189.-:/")
# Attribute names are plain words (a dot would start an entity prefix).
ATTRIBUTE = _word(_LETTERS + "0189")
ANY_KEY = st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"), min_size=1, max_size=20)
STRING = st.text(st.characters(blacklist_categories=["Cs"]), max_size=20)
NUMBER = st.floats(allow_nan=False, allow_infinity=False, width=64)


@st.composite
def comparisons(draw) -> Comparison:
    entity = draw(st.sampled_from(ENTITIES))
    key = draw(ATTRIBUTE if entity == "attributes" else st.one_of(BARE_KEY, ANY_KEY))
    op = draw(
        st.sampled_from(["=", "!=", "<", "<=", ">", ">=", "LIKE", "ILIKE", "IN", "NOT IN", "IS NULL", "IS NOT NULL"])
    )
    scalar = st.one_of(STRING, NUMBER)
    if op in ("IS NULL", "IS NOT NULL"):
        value = None
    elif op in ("IN", "NOT IN"):
        value = tuple(draw(st.lists(scalar, min_size=1, max_size=4)))
    else:
        value = draw(scalar)
    return Comparison(entity, key, op, value)


trees = st.recursive(
    comparisons(),
    lambda children: st.one_of(
        st.lists(children, min_size=2, max_size=4).map(lambda items: And(tuple(items))),
        st.lists(children, min_size=2, max_size=4).map(lambda items: Or(tuple(items))),
    ),
    max_leaves=8,
)


def _quote(text: str, quote: str) -> str:
    return quote + text.replace("\\", "\\\\").replace(quote, quote + quote) + quote


def _value(value, quote: str) -> str:
    return repr(value) if isinstance(value, float) else _quote(value, quote)


def render(node, draw) -> str:
    """Text for a tree, with random spelling choices (case, quotes, spacing) the parser must accept."""
    space = draw(st.sampled_from([" ", "  ", "\t", "\n "]))
    if isinstance(node, (And, Or)):
        word = "AND" if isinstance(node, And) else "OR"
        word = draw(st.sampled_from([word, word.lower()]))
        parts = [
            f"({render(item, draw)})" if isinstance(item, (And, Or)) else render(item, draw) for item in node.items
        ]
        return f"{space}{word}{space}".join(parts)
    quote = draw(st.sampled_from(["'", '"']))
    bare = node.key[0].isalpha() or node.key[0] == "_"
    if node.entity == "attributes" and bare:
        identifier = draw(st.sampled_from([node.key, f"attributes.{node.key}", f"attribute.{node.key}"]))
    elif bare and all(c.isalnum() or c in "_.-:/" for c in node.key) and draw(st.booleans()):
        identifier = f"{node.entity}.{node.key}"
    else:
        identifier = f"{node.entity}.{_quote(node.key, '`')}"
    op = node.op if node.op in ("=", "!=", "<", "<=", ">", ">=") else draw(st.sampled_from([node.op, node.op.lower()]))
    if node.value is None:
        return f"{identifier}{space}{op}"
    if isinstance(node.value, tuple):
        return f"{identifier} {op} ({', '.join(_value(v, quote) for v in node.value)})"
    return f"{identifier}{space}{op}{space}{_value(node.value, quote)}"


@settings(max_examples=120, deadline=None)
@given(tree=trees, data=st.data())
def test_rendered_trees_parse_back(tree, data):
    text = render(tree, data.draw)
    assert parse_filter(text) == tree


@settings(max_examples=500, deadline=None)
@given(text=st.text(max_size=60))
def test_parser_only_ever_raises_invalid_parameter(text):
    with contextlib.suppress(InvalidParameter):
        parse_filter(text)


@settings(max_examples=300, deadline=None)
@given(text=st.text(alphabet="metrics.acc params.lr tags.x'\"`()=<>!, ANDORIN0123456789-", max_size=50))
def test_grammar_shaped_noise_never_crashes(text):
    with contextlib.suppress(InvalidParameter):
        parse_filter(text)


def test_order_by_clauses():
    assert parse_order_by(["metrics.`val loss` DESC", "start_time", "tags.a asc"]) == [
        OrderKey("metrics", "val loss", False),
        OrderKey("attributes", "start_time", True),
        OrderKey("tags", "a", True),
    ]
    for bad in (["metrics.acc sideways"], [""], ["metrics.acc DESC extra"]):
        with pytest.raises(InvalidParameter):
            parse_order_by(bad)


def test_error_messages_point_at_the_problem():
    with pytest.raises(InvalidParameter, match="position 14"):
        parse_filter("metrics.acc > ")
    with pytest.raises(InvalidParameter, match="unknown entity 'metricz'"):
        parse_filter("metricz.acc > 1")
