"""FQL's lexer: an expression's characters -> tokens, each with its 0-based offset.

Apart from the parser (publisher/core/fql.py) because the lexical rules — field paths with
``\\x`` escapes, strings without escapes, numbers the browser reads as JavaScript numbers —
are where Segment's grammar is least documented and where hostile input arrives first: every
refusal is an ``FQLError`` naming the offset and, where one is likely, the fix.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

from publisher.errors import FQLError

MAX_SAFE_INTEGER = 2**53 - 1  # JavaScript's Number.MAX_SAFE_INTEGER: tsub compares numbers
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


def describe(tok: Token) -> str:
    if tok.kind == "eos":
        return "the end of the expression"
    if tok.kind == "path":
        return f"field {tok.text!r}"
    if tok.kind in ("string", "number"):
        return f"{tok.kind} {tok.text}"
    return repr(tok.text)


def tokenize(src: str) -> list[Token]:
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
