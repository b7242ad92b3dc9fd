"""FQL (Segment's Filter Query Language) -> the JSON IR that tsub evaluates in the browser.

Device-mode destination filters reach Analytics.js as ``matchers[i].ir``: a JSON string of
nested arrays that tsub's ``fqlEvaluate`` walks. Segment's own compiler is not public, so the
IR shapes here follow every observed sample (tsub and analytics-next fixtures, the Kotlin
client's notes; see ``docs`` in shared/reference/config-api.md §5):

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
import math
from collections.abc import Callable
from typing import Any, NamedTuple

from publisher.errors import FQLError

MAX_EXPRESSION_BYTES = 5 * 1024  # "FQL queries are limited to 5 KB each" (Segment docs)
MAX_NESTING = 64  # parentheses, lists, calls and '!' — keeps the parser's recursion bounded
MAX_IR_DEPTH = 512  # long and/or chains nest one level per term; json and tsub recurse
MAX_SAFE_INTEGER = 2**53 - 1  # JavaScript's Number.MAX_SAFE_INTEGER: tsub compares numbers

# Documented functions and their arity; tsub (the browser) evaluates only BROWSER_FUNCTIONS.
FUNCTIONS: dict[str, int] = {
    "contains": 2, "match": 2, "length": 1, "lowercase": 1, "uppercase": 1, "snakecase": 1,
    "kebabcase": 1, "titlecase": 1, "typeof": 1, "bool": 1, "string": 1, "number": 1,
}
BROWSER_FUNCTIONS = frozenset({"contains", "match", "length", "lowercase", "typeof"})

_COMPARISONS = frozenset({"=", "!=", "<", "<=", ">", ">=", "in"})
_LITERALS: dict[str, Any] = {"true": True, "false": False, "null": None}
_KEYWORDS = frozenset({"and", "or", "in"})
_WHITESPACE = frozenset(" \t\r\n")
_DIGITS = frozenset("0123456789")
_IDENT = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")
_IDENT_START = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_\\")


class Token(NamedTuple):
    kind: str  # path, literal, string, number, an operator/keyword/punctuation itself, or eos
    value: Any
    pos: int
    text: str
    plain: bool = False  # a path without dots or escapes (may name a function)


def _describe(tok: Token) -> str:
    if tok.kind == "eos":
        return "the end of the expression"
    if tok.kind == "path":
        return f"field {tok.text!r}"
    if tok.kind in ("string", "number"):
        return f"{tok.kind} {tok.text}"
    return repr(tok.text)


def _tokenize(src: str) -> list[Token]:
    tokens: list[Token] = []
    i, n = 0, len(src)
    while i < n:
        c = src[i]
        if c in _WHITESPACE:
            i += 1
        elif c in _IDENT_START:
            i = _lex_path(src, i, tokens)
        elif c in _DIGITS or (c in "+-" and i + 1 < n and src[i + 1] in _DIGITS):
            i = _lex_number(src, i, tokens)
        elif c in "+-":
            raise FQLError(f"expected a digit after {c!r}", position=i)
        elif c in "'\"":
            end = src.find(c, i + 1)
            if end < 0:
                raise FQLError("unterminated string", position=i)
            tokens.append(Token("string", src[i + 1:end], i, src[i:end + 1]))
            i = end + 1
        elif src.startswith(("!=", "<=", ">="), i):
            tokens.append(Token(src[i:i + 2], None, i, src[i:i + 2]))
            i += 2
        elif src.startswith(("==", "&&", "||"), i):
            hint = {"=": "'='", "&": "'and'", "|": "'or'"}[c]
            raise FQLError(f"{src[i:i + 2]!r} is not an FQL operator; use {hint}", position=i)
        elif c in "=<>!()[],":
            tokens.append(Token(c, None, i, c))
            i += 1
        else:
            raise FQLError(f"invalid character {c!r}", position=i)
    tokens.append(Token("eos", None, n, ""))
    return tokens


def _lex_path(src: str, start: int, tokens: list[Token]) -> int:
    """A dotted field path (``properties.product\\ 1.price``), keyword, literal or name."""
    i, n, segment, plain = start, len(src), "", True
    segments: list[str] = []
    while True:
        if i < n and src[i] == "\\":
            if i + 1 == n:
                raise FQLError("expected a character after '\\'", position=i)
            segment, i, plain = segment + src[i + 1], i + 2, False
        elif i < n and src[i] in _IDENT:
            segment, i = segment + src[i], i + 1
        elif i < n and src[i] == "." and segment:
            segments.append(segment)
            segment, i, plain = "", i + 1, False
        else:
            if not segment:
                raise FQLError("expected a field name after '.'", position=i)
            segments.append(segment)
            break
    text = src[start:i]
    if plain and text in _KEYWORDS:
        tokens.append(Token(text, None, start, text))
    elif plain and text in _LITERALS:
        tokens.append(Token("literal", _LITERALS[text], start, text))
    else:
        tokens.append(Token("path", ".".join(segments), start, text, plain))
    return i


def _lex_number(src: str, start: int, tokens: list[Token]) -> int:
    i, n, dot = start + 1, len(src), -1
    while i < n and (src[i] in _DIGITS or src[i] == "."):
        if src[i] == ".":
            if dot >= 0:
                raise FQLError("multiple decimal points in one number", position=i)
            if i + 1 >= n or src[i + 1] not in _DIGITS:
                raise FQLError("expected a digit after the decimal point", position=i)
            dot = i
        i += 1
    if i < n and (src[i] in _IDENT or src[i] == "\\"):
        raise FQLError(f"unexpected {src[i]!r} after number {src[start:i]}", position=i)
    text = src[start:i]
    value: float | int
    if dot >= 0:
        value = float(text)  # a digit string of any length: inf beyond ~1.8e308
        exact = math.isfinite(value)
    else:  # (int() refuses strings over 4,300 digits: test the length first)
        value = int(text) if len(text) <= 20 else MAX_SAFE_INTEGER + 1
        exact = abs(value) <= MAX_SAFE_INTEGER
    if not exact:
        shown = text if len(text) <= 24 else f"{text[:20]}… ({len(text)} characters)"
        raise FQLError(f"number {shown} is out of range: the browser reads FQL numbers as "
                       f"JavaScript numbers (whole numbers up to ±{MAX_SAFE_INTEGER}, "
                       "finite decimals)", position=start)
    tokens.append(Token("number", value, start, text))
    return i


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
            raise FQLError(f"expected {what}, found {_describe(tok)}", position=tok.pos)
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
        raise FQLError(f"expected a value, found {_describe(tok)}", position=tok.pos)

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
                                   f"null or list), found {_describe(tok)}", position=tok.pos)
                if self.expect_one((",", "]"), "',' or ']' in the list").kind == "]":
                    break
        self.nesting -= 1
        return {"value": items}

    def expect_one(self, kinds: tuple[str, ...], what: str) -> Token:
        tok = self.next()
        if tok.kind not in kinds:
            raise FQLError(f"expected {what}, found {_describe(tok)}", position=tok.pos)
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
    parser = _Parser(_tokenize(expr))
    if parser.peek().kind == "eos":
        raise FQLError("empty expression", position=0)
    ir = parser.expression()
    tok = parser.peek()
    if tok.kind == ")":
        raise FQLError("unexpected ')' without a matching '('", position=tok.pos)
    if tok.kind != "eos":
        raise FQLError(f"expected 'and', 'or' or the end of the expression, found "
                       f"{_describe(tok)}", position=tok.pos)
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
