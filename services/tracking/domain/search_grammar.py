"""MLflow's search filter grammar, plus OR and parentheses: a tokenizer and a recursive-descent parser.

    filter      := or_expr
    or_expr     := and_expr ("OR" and_expr)*
    and_expr    := primary ("AND" primary)*
    primary     := "(" or_expr ")" | comparison
    comparison  := identifier operator operand | identifier "IS" ["NOT"] "NULL"
    identifier  := [entity "."] key          key: bare word (dots allowed), `quoted` or "quoted"
    operator    := = | != | <> | < | <= | > | >= | LIKE | ILIKE | IN | NOT IN
    operand     := number | string | "(" value ("," value)* ")"

The parser only builds a syntax tree; what an entity or key means (which columns, which operators are
allowed for it) is decided by the SQL compiler of each searchable object (runs, experiments, models).
Every error is an `InvalidParameter`, as MLflow answers INVALID_PARAMETER_VALUE.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from shared.core.errors import InvalidParameter

# Singular/plural/alias spellings MLflow accepts, normalised to one name per entity.
ENTITY_ALIASES = {
    "metric": "metrics",
    "metrics": "metrics",
    "param": "params",
    "params": "params",
    "parameter": "params",
    "parameters": "params",
    "tag": "tags",
    "tags": "tags",
    "attribute": "attributes",
    "attributes": "attributes",
    "attr": "attributes",
    "run": "attributes",
    "dataset": "datasets",
    "datasets": "datasets",
}

COMPARISON_OPERATORS = ("=", "!=", "<", "<=", ">", ">=", "LIKE", "ILIKE", "IN", "NOT IN", "IS NULL", "IS NOT NULL")
KEYWORDS = {"AND", "OR", "NOT", "IN", "LIKE", "ILIKE", "IS", "NULL"}


@dataclass(frozen=True)
class Comparison:
    entity: str  # metrics | params | tags | attributes | datasets
    key: str
    op: str  # one of COMPARISON_OPERATORS
    value: str | float | tuple[str | float, ...] | None


@dataclass(frozen=True)
class And:
    items: tuple[Node, ...]


@dataclass(frozen=True)
class Or:
    items: tuple[Node, ...]


Node = Comparison | And | Or


@dataclass(frozen=True)
class OrderKey:
    entity: str
    key: str
    ascending: bool


@dataclass(frozen=True)
class Token:
    kind: str  # WORD, IDENT (quoted identifier), STRING, NUMBER, OP, LPAREN, RPAREN, COMMA, DOT, END
    text: str
    pos: int


_TOKEN_RE = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<number>[-+]?(?:\d+\.?\d*(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?))(?![\w.])
  | (?P<op><=|>=|!=|<>|==|=|<|>)
  | (?P<lparen>\()
  | (?P<rparen>\))
  | (?P<comma>,)
  | (?P<word>[A-Za-z_][\w.\-:/]*)
  | (?P<quote>['"`])
    """,
    re.VERBOSE,
)
# A quoted token's kind by its quote: backticks only ever quote identifiers.
_QUOTE_KINDS = {"'": "STRING", '"': "DSTRING", "`": "IDENT"}
_SIMPLE_KINDS = {
    "number": "NUMBER",
    "op": "OP",
    "lparen": "LPAREN",
    "rparen": "RPAREN",
    "comma": "COMMA",
    "word": "WORD",
}


def _read_quoted(text: str, start: int, quote: str) -> tuple[str, int]:
    """Read a quoted literal starting after the opening quote; backslash escapes and doubled quotes."""
    out: list[str] = []
    i = start
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            out.append(text[i + 1])
            i += 2
            continue
        if ch == quote:
            if i + 1 < len(text) and text[i + 1] == quote:
                out.append(quote)
                i += 2
                continue
            return "".join(out), i + 1
        out.append(ch)
        i += 1
    raise InvalidParameter(f"Invalid filter: unterminated {quote} quote starting at position {start - 1}.")


def tokenize(text: str) -> list[Token]:
    tokens: list[Token] = []
    pos = 0
    while pos < len(text):
        match = _TOKEN_RE.match(text, pos)
        if match is None:
            raise InvalidParameter(f"Invalid filter: unexpected character {text[pos]!r} at position {pos}.")
        kind = match.lastgroup
        if kind == "ws":
            pos = match.end()
        elif kind == "quote":
            quote = match.group()
            value, end = _read_quoted(text, match.end(), quote)
            tokens.append(Token(_QUOTE_KINDS[quote], value, pos))
            pos = end
        else:
            tokens.append(Token(_SIMPLE_KINDS[kind or ""], match.group(), pos))
            pos = match.end()
    tokens.append(Token("END", "", len(text)))
    return tokens


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = tokenize(text)
        self.index = 0

    @property
    def current(self) -> Token:
        return self.tokens[self.index]

    def advance(self) -> Token:
        token = self.tokens[self.index]
        self.index += 1
        return token

    def is_keyword(self, word: str, offset: int = 0) -> bool:
        token = self.tokens[min(self.index + offset, len(self.tokens) - 1)]
        return token.kind == "WORD" and token.text.upper() == word

    def error(self, expected: str) -> InvalidParameter:
        token = self.current
        found = "end of filter" if token.kind == "END" else repr(token.text)
        return InvalidParameter(
            f"Invalid filter {self.text!r}: expected {expected} at position {token.pos}, found {found}."
        )

    # filter := or_expr END
    def parse_filter(self) -> Node:
        node = self.parse_or()
        if self.current.kind != "END":
            raise self.error("AND, OR or the end of the filter")
        return node

    def parse_or(self) -> Node:
        items = [self.parse_and()]
        while self.is_keyword("OR"):
            self.advance()
            items.append(self.parse_and())
        return items[0] if len(items) == 1 else Or(tuple(items))

    def parse_and(self) -> Node:
        items = [self.parse_primary()]
        while self.is_keyword("AND"):
            self.advance()
            items.append(self.parse_primary())
        return items[0] if len(items) == 1 else And(tuple(items))

    def parse_primary(self) -> Node:
        if self.current.kind == "LPAREN":
            self.advance()
            node = self.parse_or()
            if self.current.kind != "RPAREN":
                raise self.error("')'")
            self.advance()
            return node
        return self.parse_comparison()

    def parse_identifier(self) -> tuple[str, str]:
        """`entity.key` (split at the first dot, so tags.mlflow.runName works), `entity."quoted key"`,
        or a bare attribute name."""
        token = self.current
        if token.kind in ("IDENT", "DSTRING"):
            self.advance()
            return "attributes", token.text
        if token.kind != "WORD" or token.text.upper() in KEYWORDS:
            raise self.error("an identifier such as metrics.<key>, params.<key>, tags.<key> or an attribute")
        self.advance()
        prefix, dot, key = token.text.partition(".")
        if not dot:
            return "attributes", token.text
        entity = ENTITY_ALIASES.get(prefix.lower())
        if entity is None:
            raise InvalidParameter(
                f"Invalid filter {self.text!r}: unknown entity {prefix!r} at position {token.pos}; "
                "expected one of metrics, params, tags, attributes, datasets."
            )
        if not key:
            if self.current.kind not in ("IDENT", "DSTRING", "STRING"):
                raise self.error(f"a key after {token.text}")
            key = self.advance().text
        return entity, key

    def parse_operator(self) -> str:
        token = self.current
        if token.kind == "OP":
            self.advance()
            return {"==": "=", "<>": "!="}.get(token.text, token.text)
        if token.kind == "WORD":
            word = token.text.upper()
            if word in ("LIKE", "ILIKE", "IN"):
                self.advance()
                return word
            if word == "NOT" and self.is_keyword("IN", 1):
                self.index += 2
                return "NOT IN"
            if word == "IS":
                self.advance()
                negated = self.is_keyword("NOT")
                if negated:
                    self.advance()
                if not self.is_keyword("NULL"):
                    raise self.error("NULL")
                self.advance()
                return "IS NOT NULL" if negated else "IS NULL"
        raise self.error("a comparison operator (=, !=, <, <=, >, >=, LIKE, ILIKE, IN, NOT IN, IS NULL)")

    def parse_scalar(self) -> str | float:
        token = self.current
        if token.kind in ("STRING", "DSTRING"):
            self.advance()
            return token.text
        if token.kind == "NUMBER":
            self.advance()
            return float(token.text)
        raise self.error("a quoted string or a number")

    def parse_comparison(self) -> Comparison:
        entity, key = self.parse_identifier()
        op = self.parse_operator()
        if op in ("IS NULL", "IS NOT NULL"):
            return Comparison(entity, key, op, None)
        if op in ("IN", "NOT IN"):
            if self.current.kind != "LPAREN":
                raise self.error(f"'(' after {op}")
            self.advance()
            values = [self.parse_scalar()]
            while self.current.kind == "COMMA":
                self.advance()
                values.append(self.parse_scalar())
            if self.current.kind != "RPAREN":
                raise self.error("',' or ')'")
            self.advance()
            return Comparison(entity, key, op, tuple(values))
        return Comparison(entity, key, op, self.parse_scalar())


def parse_filter(text: str | None) -> Node | None:
    """The syntax tree of a filter string; None for an empty filter."""
    if text is None or not text.strip():
        return None
    return _Parser(text).parse_filter()


def parse_order_by(clauses: list[str] | None) -> list[OrderKey]:
    """`["metrics.acc DESC", "start_time"]` -> order keys. Direction defaults to ascending."""
    keys: list[OrderKey] = []
    for clause in clauses or []:
        parser = _Parser(clause)
        if parser.current.kind == "END":
            raise InvalidParameter(f"Invalid order_by clause {clause!r}: empty.")
        entity, key = parser.parse_identifier()
        ascending = True
        if parser.current.kind == "WORD" and parser.current.text.upper() in ("ASC", "DESC"):
            ascending = parser.advance().text.upper() == "ASC"
        if parser.current.kind != "END":
            raise InvalidParameter(
                f"Invalid order_by clause {clause!r}: expected ASC or DESC after the key, "
                f"found {parser.current.text!r}."
            )
        keys.append(OrderKey(entity, key, ascending))
    return keys
