"""FQL (Segment's Filter Query Language) -> the JSON IR that tsub evaluates in the browser.

Device-mode destination filters reach Analytics.js as ``matchers[i].ir``: a JSON string of
nested arrays that tsub's ``fqlEvaluate`` walks. Segment's own compiler is not public, so the
IR shapes here follow every observed sample (tsub and analytics-next fixtures, the Kotlin
client's notes; docs/CONFIG-API.md, "Filters", and docs/CLIENT-CONTRACT.md §5):

    event = "x"                      ["=", "event", {"value": "x"}]
    a and b and c                    ["and", a, ["and", b, c]]       (right-nested, observed)
    !(a or b)                        ["!", ["or", a, b]]             (observed)
    contains(email, ".com")          ["contains", "email", {"value": ".com"}]
    type in ["a", "b"]               ["in", "type", {"value": [{"value": "a"}, {"value": "b"}]}]

Choices where no sample decides: ``or`` nests to the right like ``and``; ``and`` binds tighter
than ``or`` (``a and b or c`` is ``["or", ["and", a, b], c]``); ``!`` negates the comparison
after it (``!a = 1`` is ``["!", ["=", "a", {"value": 1}]]``, as Python's ``not``); comparisons
do not chain. Strings take ``'`` or ``"`` with no escapes (as fql-ts: a glob's ``\\*`` stays
verbatim); field paths resolve ``\\x`` escapes. Errors are ``FQLError`` with a 0-based offset.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from publisher.core.fql_lexer import Token, describe, tokenize
from publisher.errors import FQLError

MAX_EXPRESSION_BYTES = 5 * 1024  # "FQL queries are limited to 5 KB each" (Segment docs)
MAX_NESTING = 64  # parentheses, lists, calls and '!' — keeps the parser's recursion bounded
MAX_IR_DEPTH = 512  # long and/or chains nest one level per term; json and tsub recurse

# Documented functions and their arity; tsub (the browser) evaluates only BROWSER_FUNCTIONS.
FUNCTIONS: dict[str, int] = {
    "contains": 2, "match": 2, "length": 1, "lowercase": 1, "uppercase": 1, "snakecase": 1,
    "kebabcase": 1, "titlecase": 1, "typeof": 1, "bool": 1, "string": 1, "number": 1,
}
BROWSER_FUNCTIONS = frozenset({"contains", "match", "length", "lowercase", "typeof"})

_COMPARISONS = frozenset({"=", "!=", "<", "<=", ">", ">=", "in"})


class _Parser:
    def __init__(self, tokens: list[Token]) -> None:
        self.tokens = tokens
        self.i = 0
        self.nesting = 0

    def peek(self) -> Token:
        return self.tokens[self.i]

    def next(self) -> Token:
        tok = self.tokens[self.i]
        if tok.kind != "eos":
            self.i += 1
        return tok

    def expect(self, kind: str, what: str) -> Token:
        tok = self.next()
        if tok.kind != kind:
            raise FQLError(f"expected {what}, found {describe(tok)}", position=tok.pos)
        return tok

    def enter(self, tok: Token) -> None:
        self.nesting += 1
        if self.nesting > MAX_NESTING:
            raise FQLError(f"expression nests more than {MAX_NESTING} levels deep",
                           position=tok.pos, code="fql_too_deep")

    def expression(self) -> Any:
        return self.chain("or", self.conjunction)

    def conjunction(self) -> Any:
        return self.chain("and", self.negation)

    def chain(self, op: str, operand: Callable[[], Any]) -> Any:
        terms = [operand()]
        while self.peek().kind == op:
            self.next()
            terms.append(operand())
        result = terms.pop()
        for term in reversed(terms):  # right-nested, as Segment's compiler emits
            result = [op, term, result]
        return result

    def negation(self) -> Any:
        bangs = 0
        while self.peek().kind == "!":
            self.enter(self.next())
            bangs += 1
        result = self.comparison()
        self.nesting -= bangs
        for _ in range(bangs):
            result = ["!", result]
        return result

    def comparison(self) -> Any:
        left = self.operand()
        if self.peek().kind not in _COMPARISONS:
            return left
        op = self.next().kind
        result = [op, left, self.operand()]
        if self.peek().kind in _COMPARISONS:
            raise FQLError("comparisons cannot be chained; join them with 'and'",
                           position=self.peek().pos)
        return result

    def operand(self) -> Any:
        tok = self.next()
        if tok.kind in ("string", "number", "literal"):
            return {"value": tok.value}
        if tok.kind == "[":
            return self.list_(tok)
        if tok.kind == "(":
            self.enter(tok)
            inner = self.expression()
            self.expect(")", f"')' to close the '(' at position {tok.pos}")
            self.nesting -= 1
            return inner
        if tok.kind == "path":
            return self.call(tok) if self.peek().kind == "(" else tok.value
        raise FQLError(f"expected a value, found {describe(tok)}", position=tok.pos)

    def call(self, name: Token) -> Any:
        if not name.plain or name.value not in FUNCTIONS:
            raise FQLError(f"unknown function {name.text!r}", position=name.pos)
        self.enter(self.next())
        args: list[Any] = []
        if self.peek().kind == ")":
            self.next()
        else:
            while True:
                args.append(self.expression())
                sep = self.expect_one((",", ")"), f"',' or ')' in {name.text}()")
                if sep.kind == ")":
                    break
        self.nesting -= 1
        arity = FUNCTIONS[name.value]
        if len(args) != arity:
            raise FQLError(f"{name.text}() takes {arity} argument{'s' * (arity > 1)}, "
                           f"got {len(args)}", position=name.pos)
        return [name.value, *args]

    def list_(self, open_: Token) -> Any:
        self.enter(open_)
        items: list[Any] = []
        if self.peek().kind == "]":
            self.next()
        else:
            while True:
                tok = self.next()
                if tok.kind in ("string", "number", "literal"):
                    items.append({"value": tok.value})
                elif tok.kind == "[":
                    items.append(self.list_(tok))
                else:
                    raise FQLError("expected a list element (a string, number, true, false, "
                                   f"null or list), found {describe(tok)}", position=tok.pos)
                if self.expect_one((",", "]"), "',' or ']' in the list").kind == "]":
                    break
        self.nesting -= 1
        return {"value": items}

    def expect_one(self, kinds: tuple[str, ...], what: str) -> Token:
        tok = self.next()
        if tok.kind not in kinds:
            raise FQLError(f"expected {what}, found {describe(tok)}", position=tok.pos)
        return tok


def _check_size(expr: str) -> None:
    try:
        encoded = expr.encode("utf-8")
    except UnicodeEncodeError as exc:  # a lone surrogate from a JSON "\ud800" escape
        raise FQLError(f"invalid character U+{ord(expr[exc.start]):04X}",
                       position=exc.start) from None
    if len(encoded) > MAX_EXPRESSION_BYTES:
        fits = len(encoded[:MAX_EXPRESSION_BYTES].decode("utf-8", "ignore"))
        raise FQLError(f"expression is {len(encoded)} bytes; the limit is "
                       f"{MAX_EXPRESSION_BYTES} bytes (5 KB)", position=fits,
                       code="fql_too_long")


def _ir_depth(ir: Any) -> int:
    deepest, stack = 0, [(ir, 1)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        children = node.values() if isinstance(node, dict) else node
        stack.extend((child, depth + 1) for child in children
                     if isinstance(child, list | dict))
    return deepest


def parse(expr: str) -> Any:
    """Parse one FQL expression into tsub's IR (lists, path strings, ``{"value": X}``)."""
    if not isinstance(expr, str):
        raise FQLError(f"expression must be a string, not {type(expr).__name__}", position=0)
    _check_size(expr)
    parser = _Parser(tokenize(expr))
    if parser.peek().kind == "eos":
        raise FQLError("empty expression", position=0)
    ir = parser.expression()
    tok = parser.peek()
    if tok.kind == ")":
        raise FQLError("unexpected ')' without a matching '('", position=tok.pos)
    if tok.kind != "eos":
        raise FQLError(f"expected 'and', 'or' or the end of the expression, found "
                       f"{describe(tok)}", position=tok.pos)
    if _ir_depth(ir) > MAX_IR_DEPTH:
        raise FQLError(f"expression nests more than {MAX_IR_DEPTH} levels deep "
                       "(too many terms joined by 'and'/'or')", position=0, code="fql_too_deep")
    return ir


def ir_json(expr: str) -> str:
    """The IR as the compact JSON string tsub reads from ``matcher["ir"]``."""
    # allow_nan=False: the lexer keeps numbers finite; Infinity is not JSON to a browser
    return json.dumps(parse(expr), separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def functions_used(ir: Any) -> frozenset[str]:
    """Names of the functions an IR calls (to spot those tsub cannot run in the browser)."""
    found: set[str] = set()
    stack = [ir]
    while stack:
        node = stack.pop()
        if isinstance(node, list) and node:
            if isinstance(node[0], str) and node[0] in FUNCTIONS:
                found.add(node[0])
            stack.extend(node[1:])
    return frozenset(found)
