"""Table tests for the FQL parser: expression -> tsub IR, and bad expressions -> FQLError."""

from __future__ import annotations

import json
from typing import Any

import pytest

from publisher.core.fql import (
    MAX_EXPRESSION_BYTES,
    MAX_IR_DEPTH,
    MAX_NESTING,
    functions_used,
    ir_json,
    parse,
)
from publisher.errors import FQLError, InvalidArgument


def v(x: Any) -> dict[str, Any]:
    return {"value": x}


A, B, C = ["=", "a", v(1)], ["=", "b", v(2)], ["=", "c", v(3)]


@pytest.mark.parametrize(("expr", "ir"), [
    # literals and paths
    pytest.param("userId", "userId", id="bare-path"),
    pytest.param("context.library.version", "context.library.version", id="dotted-path"),
    pytest.param("properties.product\\ 1.price", "properties.product 1.price",
                 id="escaped-space-in-path"),
    pytest.param("properties.\\$price", "properties.$price", id="escaped-symbol-in-path"),
    pytest.param("\\true", "true", id="escaped-keyword-is-a-path"),
    pytest.param("traits.first_name-x.0", "traits.first_name-x.0", id="ident-chars-and-digits"),
    pytest.param("properties.and", "properties.and", id="keyword-as-later-segment"),
    pytest.param("nullable", "nullable", id="keyword-prefix-is-a-path"),
    pytest.param("true", v(True), id="true"),
    pytest.param("false", v(False), id="false"),
    pytest.param("null", v(None), id="null"),
    pytest.param("'single'", v("single"), id="single-quoted-string"),
    pytest.param('"dou\'ble"', v("dou'ble"), id="double-quoted-string-with-apostrophe"),
    pytest.param("'a\\*b'", v("a\\*b"), id="backslash-kept-verbatim-in-string"),
    pytest.param("''", v(""), id="empty-string"),
    pytest.param("42", v(42), id="integer"),
    pytest.param("-4", v(-4), id="negative-integer"),
    pytest.param("+5", v(5), id="plus-sign"),
    pytest.param("30.25", v(30.25), id="decimal"),
    pytest.param("-3.5", v(-3.5), id="negative-decimal"),
    pytest.param("[]", v([]), id="empty-list"),
    pytest.param("['a', 1, true, null, [2]]",
                 v([v("a"), v(1), v(True), v(None), v([v(2)])]), id="list-of-literals"),
    # comparisons
    pytest.param('event = "Test"', ["=", "event", v("Test")], id="equals-fixture"),
    pytest.param("type != 'track'", ["!=", "type", v("track")], id="not-equals"),
    pytest.param("a < 1", ["<", "a", v(1)], id="less"),
    pytest.param("a <= 1", ["<=", "a", v(1)], id="less-equal"),
    pytest.param("a > 1", [">", "a", v(1)], id="greater"),
    pytest.param("a >= 1", [">=", "a", v(1)], id="greater-equal"),
    pytest.param("a=1", A, id="no-spaces"),
    pytest.param("a = -1", ["=", "a", v(-1)], id="negative-operand"),
    pytest.param("'x' = a", ["=", v("x"), "a"], id="literal-on-the-left"),
    pytest.param("type in ['track', 'identify']",
                 ["in", "type", v([v("track"), v("identify")])], id="in-list"),
    pytest.param("'dark-mode' in properties.features",
                 ["in", v("dark-mode"), "properties.features"], id="in-field"),
    # boolean structure
    pytest.param("a = 1 and b = 2", ["and", A, B], id="and"),
    pytest.param("a = 1 or b = 2", ["or", A, B], id="or"),
    pytest.param("a = 1 and b = 2 and c = 3", ["and", A, ["and", B, C]], id="and-right-nested"),
    pytest.param("a = 1 or b = 2 or c = 3", ["or", A, ["or", B, C]], id="or-right-nested"),
    pytest.param("a = 1 and b = 2 or c = 3", ["or", ["and", A, B], C], id="and-binds-tighter-1"),
    pytest.param("a = 1 or b = 2 and c = 3", ["or", A, ["and", B, C]], id="and-binds-tighter-2"),
    pytest.param("(a = 1 or b = 2) and c = 3", ["and", ["or", A, B], C], id="parentheses"),
    pytest.param("((a = 1))", A, id="redundant-parentheses"),
    pytest.param("!(a = 1)", ["!", A], id="not-group"),
    pytest.param("!a = 1", ["!", A], id="not-applies-to-the-comparison"),
    pytest.param("!!properties.flag", ["!", ["!", "properties.flag"]], id="double-not"),
    pytest.param("! a", ["!", "a"], id="not-with-space"),
    pytest.param("!a = 1 and b = 2", ["and", ["!", A], B], id="not-binds-tighter-than-and"),
    pytest.param("(a = 1) = true", ["=", A, v(True)], id="group-as-operand"),
    pytest.param("\n\ta = 1\r\n", A, id="surrounding-whitespace"),
    # functions
    pytest.param('contains(email, ".com")', ["contains", "email", v(".com")], id="contains"),
    pytest.param("match( context.library.version, '1.*' )",
                 ["match", "context.library.version", v("1.*")], id="match"),
    pytest.param("length( userId ) < 1", ["<", ["length", "userId"], v(1)], id="length"),
    pytest.param("lowercase(event) = 'x'", ["=", ["lowercase", "event"], v("x")],
                 id="lowercase"),
    pytest.param("typeof(userId) = 'null'", ["=", ["typeof", "userId"], v("null")],
                 id="typeof"),
    pytest.param("uppercase(a) = 'A'", ["=", ["uppercase", "a"], v("A")], id="uppercase"),
    pytest.param("snakecase(a)", ["snakecase", "a"], id="snakecase"),
    pytest.param("kebabcase(a)", ["kebabcase", "a"], id="kebabcase"),
    pytest.param("titlecase(a)", ["titlecase", "a"], id="titlecase"),
    pytest.param("bool(a)", ["bool", "a"], id="bool"),
    pytest.param("string(a) = '1'", ["=", ["string", "a"], v("1")], id="string"),
    pytest.param("number(a) > 1", [">", ["number", "a"], v(1)], id="number"),
    pytest.param("contains (lowercase(email), 'x')",
                 ["contains", ["lowercase", "email"], v("x")], id="nested-call-space-before-paren"),
    pytest.param("!contains( context.library.name, 'js' )",
                 ["!", ["contains", "context.library.name", v("js")]], id="not-call"),
    pytest.param("type = 'track' and ( event = 'Click' or match( event, 'Button *' ) )",
                 ["and", ["=", "type", v("track")],
                  ["or", ["=", "event", v("Click")], ["match", "event", v("Button *")]]],
                 id="docs-example"),
])
def test_parse(expr: str, ir: Any) -> None:
    """Each FQL construct parses to the IR tsub evaluates."""
    assert parse(expr) == ir


@pytest.mark.parametrize(("expr", "ir_text"), [
    pytest.param('event = "munanyo" and type = "track" and properties.referrer = "munyaaaanyo"',
                 '["and",["=","event",{"value":"munanyo"}],["and",["=","type",{"value":"track"}],'
                 '["=","properties.referrer",{"value":"munyaaaanyo"}]]]',
                 id="analytics-next-cdn-settings-fixture"),
    pytest.param('!(event = "CP VOD - Start video" or event = "CP VOD - Track video")',
                 '["!",["or",["=","event",{"value":"CP VOD - Start video"}],'
                 '["=","event",{"value":"CP VOD - Track video"}]]]', id="kotlin-client-sample"),
    pytest.param('contains(event, "DoNotSend") and type != "identify"',
                 '["and",["contains","event",{"value":"DoNotSend"}],'
                 '["!=","type",{"value":"identify"}]]', id="react-native-sample"),
    pytest.param('event = "Test"', '["=","event",{"value":"Test"}]', id="tsub-store-sample"),
    pytest.param("event = 'café'", '["=","event",{"value":"café"}]', id="non-ascii-kept"),
])
def test_ir_json_matches_observed_samples(expr: str, ir_text: str) -> None:
    """ir_json reproduces, byte for byte, IR strings observed in Segment's clients."""
    assert ir_json(expr) == ir_text
    assert json.loads(ir_text) == parse(expr)


@pytest.mark.parametrize(("expr", "message", "position"), [
    pytest.param("", "empty expression", 0, id="empty"),
    pytest.param("   \n", "empty expression", 0, id="whitespace-only"),
    pytest.param("event = 'abc", "unterminated string", 8, id="unterminated-single"),
    pytest.param('event = "abc\'', "unterminated string", 8, id="unterminated-mismatched-quote"),
    pytest.param("message.event > 30.30.30", "multiple decimal points in one number", 21,
                 id="multiple-decimal-points"),
    pytest.param("a > 5.", "expected a digit after the decimal point", 5, id="trailing-point"),
    pytest.param("a > 5.x", "expected a digit after the decimal point", 5, id="point-then-letter"),
    pytest.param("a > 5x", "unexpected 'x' after number 5", 5, id="letter-after-number"),
    pytest.param("a > -", "expected a digit after '-'", 4, id="bare-minus"),
    pytest.param("(a = 1", "expected ')' to close the '(' at position 0, found the end", 6,
                 id="missing-close-paren"),
    pytest.param("(a = 1 b", "expected ')' to close the '(' at position 0, found field 'b'", 7,
                 id="junk-instead-of-close-paren"),
    pytest.param("a = 1)", "unexpected ')' without a matching '('", 5, id="extra-close-paren"),
    pytest.param("a = 1 b = 2", "expected 'and', 'or' or the end of the expression, found "
                 "field 'b'", 6, id="missing-conjunction"),
    pytest.param("frobnicate(a)", "unknown function 'frobnicate'", 0, id="unknown-function"),
    pytest.param("a = properties.x(1)", "unknown function 'properties.x'", 4,
                 id="dotted-function-name"),
    pytest.param("contains(a)", "contains() takes 2 arguments, got 1", 0, id="too-few-args"),
    pytest.param("length(a, b)", "length() takes 1 argument, got 2", 0, id="too-many-args"),
    pytest.param("contains(a 'x')", "expected ',' or ')' in contains(), found string 'x'", 11,
                 id="missing-comma-in-call"),
    pytest.param("contains(a, ", "expected a value, found the end of the expression", 12,
                 id="unterminated-call"),
    pytest.param("a in [1, b]", "expected a list element (a string, number, true, false, null "
                 "or list), found field 'b'", 9, id="path-in-list"),
    pytest.param("a in [1,]", "expected a list element", 8, id="trailing-comma-in-list"),
    pytest.param("a in [1 2]", "expected ',' or ']' in the list, found number 2", 8,
                 id="missing-comma-in-list"),
    pytest.param("a in [1", "expected ',' or ']' in the list, found the end", 7,
                 id="unterminated-list"),
    pytest.param("a = ", "expected a value, found the end of the expression", 4,
                 id="missing-right-operand"),
    pytest.param("= 1", "expected a value, found '='", 0, id="missing-left-operand"),
    pytest.param("a = 1 and", "expected a value, found the end of the expression", 9,
                 id="dangling-and"),
    pytest.param("or a", "expected a value, found 'or'", 0, id="leading-or"),
    pytest.param("!", "expected a value, found the end of the expression", 1, id="bare-not"),
    pytest.param("a = 1 = 2", "comparisons cannot be chained; join them with 'and'", 6,
                 id="chained-comparison"),
    pytest.param("a == 1", "'==' is not an FQL operator; use '='", 2, id="double-equals"),
    pytest.param("a = 1 && b = 2", "'&&' is not an FQL operator; use 'and'", 6, id="ampersands"),
    pytest.param("a = 1 || b = 2", "'||' is not an FQL operator; use 'or'", 6, id="pipes"),
    pytest.param("a = $1", "invalid character '$'", 4, id="invalid-character"),
    pytest.param("a = 1\x00", "invalid character '\\x00'", 5, id="control-character"),
    pytest.param("properties.", "expected a field name after '.'", 11, id="trailing-dot"),
    pytest.param("properties..x", "expected a field name after '.'", 11, id="double-dot"),
    pytest.param("a = .5", "invalid character '.'", 4, id="leading-point"),
    pytest.param("properties.x\\", "expected a character after '\\'", 12,
                 id="dangling-escape"),
    pytest.param("a = '\ud800'", "invalid character U+D800", 5, id="lone-surrogate"),
    pytest.param("a = 9007199254740992", "number 9007199254740992 is out of range", 4,
                 id="integer-over-max-safe"),
    pytest.param("a in [1, -9007199254740992]", "number -9007199254740992 is out of range", 9,
                 id="negative-integer-in-list"),
    pytest.param("a = " + "9" * 5000, "(5000 characters) is out of range", 4,
                 id="integer-over-int-digit-limit"),
    pytest.param("a > 1" + "0" * 400 + ".5", "(403 characters) is out of range", 4,
                 id="decimal-overflows-to-infinity"),
])
def test_parse_errors(expr: str, message: str, position: int) -> None:
    """A bad expression raises FQLError naming the problem and its 0-based offset."""
    with pytest.raises(FQLError) as caught:
        parse(expr)

    assert message in caught.value.message
    assert caught.value.position == position
    assert caught.value.message.endswith(f"(at position {position})")
    assert caught.value.http_status == 400


def test_numbers_at_the_javascript_limits() -> None:
    """Whole numbers up to ±(2**53 - 1) and long finite decimals stay exact JSON numbers."""
    text = ir_json("a in [9007199254740991, -9007199254740991, 0.1234567890123456789]")

    assert text == ('["in","a",{"value":[{"value":9007199254740991},'
                    '{"value":-9007199254740991},{"value":0.12345678901234568}]}]')


def test_fql_error_is_an_invalid_argument() -> None:
    """FQL errors are 400 InvalidArgument errors with the fql_syntax code."""
    with pytest.raises(InvalidArgument) as caught:
        parse("a = ")

    assert caught.value.code == "fql_syntax"
    assert caught.value.to_dict()["code"] == 3


def test_non_string_expression() -> None:
    """A non-string expression is refused with a clear error, not a crash."""
    with pytest.raises(FQLError, match="expression must be a string, not int"):
        parse(42)  # type: ignore[arg-type]


@pytest.mark.parametrize(("expr", "ok"), [
    pytest.param("a = '" + "x" * (MAX_EXPRESSION_BYTES - 6) + "'", True, id="exactly-5-KB"),
    pytest.param("a = '" + "x" * (MAX_EXPRESSION_BYTES - 5) + "'", False, id="one-byte-over"),
    pytest.param("a = '" + "é" * (MAX_EXPRESSION_BYTES // 2) + "'", False,
                 id="limit-counts-utf8-bytes"),
])
def test_size_limit(expr: str, ok: bool) -> None:
    """Expressions over 5 KB of UTF-8 are refused with the fql_too_long code."""
    if ok:
        assert parse(expr) == ["=", "a", v(expr[5:-1])]
        return
    with pytest.raises(FQLError, match=r"bytes; the limit is 5120 bytes \(5 KB\)") as caught:
        parse(expr)
    assert caught.value.code == "fql_too_long"
    assert len(expr[:caught.value.position].encode()) <= MAX_EXPRESSION_BYTES
    assert len(expr[:caught.value.position + 1].encode()) > MAX_EXPRESSION_BYTES


@pytest.mark.parametrize(("expr", "position"), [
    pytest.param("(" * (MAX_NESTING + 1) + "a" + ")" * (MAX_NESTING + 1), MAX_NESTING,
                 id="parentheses"),
    pytest.param("!" * (MAX_NESTING + 1) + "a", MAX_NESTING, id="negations"),
    pytest.param("a in " + "[" * (MAX_NESTING + 1) + "]" * (MAX_NESTING + 1), 5 + MAX_NESTING,
                 id="lists"),
    pytest.param(" or ".join(["a"] * (MAX_IR_DEPTH + 2)), 0, id="long-or-chain"),
])
def test_nesting_limits(expr: str, position: int) -> None:
    """Deeply nested expressions are refused cleanly instead of exhausting the stack."""
    with pytest.raises(FQLError, match="nests more than") as caught:
        parse(expr)

    assert caught.value.code == "fql_too_deep"
    assert caught.value.position == position


def test_long_chain_within_limits() -> None:
    """An 'or' chain exactly as deep as the limit allows parses and serializes."""
    expr = " or ".join(["a"] * (MAX_IR_DEPTH + 1))

    text = ir_json(expr)

    assert text.startswith('["or","a",["or","a",')
    assert text.count("[") == MAX_IR_DEPTH


@pytest.mark.parametrize(("expr", "names"), [
    pytest.param("a = 1", frozenset(), id="none"),
    pytest.param("contains(lowercase(a), 'x') or !match(b, 'y*')",
                 frozenset({"contains", "lowercase", "match"}), id="nested"),
    pytest.param("uppercase(a) in ['A']", frozenset({"uppercase"}), id="in-comparison"),
    pytest.param("a = 'contains'", frozenset(), id="string-is-not-a-call"),
])
def test_functions_used(expr: str, names: frozenset[str]) -> None:
    """functions_used lists the functions an expression calls."""
    assert functions_used(parse(expr)) == names
