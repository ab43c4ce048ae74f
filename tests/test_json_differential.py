"""The C JSON reader (csrc/io/json.c, reached through the test build's testing._json_parse)
against Python's json on a generated corpus of valid and invalid documents: numbers of
every shape, strings with every escape (surrogate pairs and broken ones), nesting from 1
to far past our limit, whitespace, trailing bytes, NUL, invalid UTF-8 and BOMs, plus
random documents and random mutations of them.

The reference is Python's json on the text decoded as strict UTF-8 (RFC 8259: JSON
exchanged between systems is UTF-8); a text that does not decode is refused. Both must
accept and refuse the same documents, and accepted ones must give the same values, except
for these deliberate differences, each tested below (where Python accepts, we refuse):
- NaN, Infinity, -Infinity: not JSON (Python accepts them as an extension);
- a lone surrogate escape (\\ud800 alone, or a low one first): it is no Unicode text and
  cannot be stored as UTF-8 (Python keeps it in a str);
- \\u0000: the reader hands out NUL-terminated C strings (Python accepts it);
- a repeated key in one object: ambiguous in a file header (Python keeps the last);
- nesting deeper than 64 (CX_JSON_MAX_DEPTH), so a hostile header cannot exhaust the
  stack (Python accepts until its recursion limit, near 1000);
- json.loads(bytes) (not a str) also accepts a UTF-8 BOM before the value and UTF-8-
  encoded surrogates (ED A0 80, decoded with "surrogatepass"), and guesses UTF-16/32 from
  NUL bytes; we take UTF-8 only, no BOM, no surrogates (json.loads(str) after a strict
  decode refuses them too, which is the reference here);
- numbers: we keep the exact value of integers below 2^64 only; any other number
  (fraction, exponent, 1e400, 2^64 and beyond) is checked against the grammar and kept
  as "not an integer" (nothing we read needs its value); for those, "same value" means
  the same token text, which Python's value is then compared with.
Safetensors adds one limit of its own (at most 8 dims in a shape): see
tests/test_safetensors_differential.py.
"""
import json
import os
import random

import pytest

from testing_module import testing

MAX_DEPTH = 64


# ---- the two readers ----------------------------------------------------------------------

class Deliberate(Exception):
    """Python accepted the text, but it falls under one of our documented refusals."""


def python_reference(data):
    """('ok', value) / ('error', why) / ('deliberate', category, value) for Python's json."""
    try:
        text = data.decode("utf-8")  # strict: no surrogates, no overlong forms
    except UnicodeDecodeError as e:
        return ("error", f"not UTF-8: {e}")
    categories = set()

    def constant(name):
        categories.add("nan_infinity")
        return float(name.replace("Infinity", "inf").replace("NaN", "nan"))

    def pairs(items):
        keys = [k for k, _ in items]
        if len(set(keys)) != len(keys):
            categories.add("duplicate_key")
        return Pairs(items)  # every member, repeated keys included, for scan()
    try:
        value = json.loads(text, parse_constant=constant, object_pairs_hook=pairs)
    except (ValueError, RecursionError) as e:
        return ("error", f"{type(e).__name__}: {e}")
    scan(value, 0, categories)
    value = None if "depth" in categories else as_dicts(value)
    if categories:
        return ("deliberate", categories, value)
    return ("ok", value)


class Pairs(list):
    """An object's members as Python's json reads them, before a dict drops repeats."""


def scan(value, depth, categories):
    if isinstance(value, str):
        if "\0" in value:
            categories.add("nul")
        if any(0xD800 <= ord(c) <= 0xDFFF for c in value):
            categories.add("lone_surrogate")
    elif isinstance(value, list):
        if depth + 1 > MAX_DEPTH:
            categories.add("depth")
            return  # deeper contents are not compared
        for item in value:
            for part in (item if isinstance(value, Pairs) else (item,)):
                scan(part, depth + 1, categories)


def as_dicts(value):
    if isinstance(value, Pairs):
        return {k: as_dicts(v) for k, v in value}
    if isinstance(value, list):
        return [as_dicts(v) for v in value]
    return value


# What our message says for each deliberate refusal.
DELIBERATE_WORDS = {
    "nan_infinity": ("expected a value", "expected a digit", "invalid literal"),
    "lone_surrogate": ("surrogate",),
    "nul": ("NUL",),
    "duplicate_key": ("duplicate key",),
    "depth": (f"nesting deeper than {MAX_DEPTH}",),
}


def ours(data):
    try:
        return ("ok", to_plain(testing._json_parse(data)))
    except ValueError as e:
        return ("error", str(e))


def to_plain(value):
    """Our tree with each non-integer number token turned into Python's value for it."""
    if isinstance(value, tuple):
        kind, token = value
        assert kind == "number"
        text = token.decode("ascii")
        if not any(c in text for c in ".eE"):
            number = int(text)
            assert not -2 ** 64 < number < 2 ** 64, f"integer {text} kept as text"
            return number
        return float(text)
    if isinstance(value, list):
        return [to_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: to_plain(v) for k, v in value.items()}
    return value


def same(a, b):
    """Equal values of equal types (bool is not int, int is not float, -0.0 is not 0.0,
    keys in the same order)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return a.hex() == b.hex() if a == a else b != b
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    return a == b


def compare(data):
    """Asserts agreement on one document; returns the outcome class for the tallies."""
    ref = python_reference(data)
    got = ours(data)
    if ref[0] == "deliberate":
        assert got[0] == "error", f"{data!r}: Python accepts with {sorted(ref[1])}, so must we refuse; got {got}"
        words = [w for c in ref[1] for w in DELIBERATE_WORDS[c]]
        if len(ref[1]) == 1 or "depth" not in ref[1]:
            assert any(w in got[1] for w in words), f"{data!r}: {got[1]!r} does not say {words}"
        return "deliberate:" + "+".join(sorted(ref[1]))
    assert got[0] == ref[0], f"{data!r}: Python {ref}, ours {got}"
    if ref[0] == "ok":
        assert same(got[1], ref[1]), f"{data!r}: Python {ref[1]!r}, ours {got[1]!r}"
    return ref[0]


# ---- the corpus ------------------------------------------------------------------------------

NUMBERS = [
    "0", "-0", "1", "-1", "7", "10", "123456789", ".5", "-.5", "1.", "-1.", "01", "-01", "00", "0.0", "-0.0",
    "0.5", "1.5", "1e5", "1E5", "1e+5", "1E+5", "1e-5", "1e05", "1e", "1e+", "1e-", "1E", "1.e5", "1.5e", "0e0",
    "0.e1", "2.5E-3", "1e400", "-1e400", "1e-400", "-1e-400", "1.7976931348623157e308", "5e-324",
    "18446744073709551615", "-18446744073709551615", "18446744073709551616", "-18446744073709551616",
    "99999999999999999999999999999", "9223372036854775807", "-9223372036854775808", "+1", "+0", "-", "--1",
    "- 1", "1..2", "1.2.3", "1ee5", "1e5e5", "1e5.5", "0x10", "0X1F", "0b1", "1_000", "1,5", "\u0661", "\uff11",
    ".", "e5", "-e5", "Infinity", "-Infinity", "NaN", "-NaN", "inf", "nan", "1f", "1d", "1L", "0.", "-0.", "-00",
    "0123", "1 2", "1-2", "1+2", "12e-0", "12E+00", "0.000000000000000000000000001",
]

ESCAPES = [
    '\\"', "\\\\", "\\/", "\\b", "\\f", "\\n", "\\r", "\\t", "\\u0041", "\\u00e9", "\\u00E9", "\\u2713", "\\uFFFF",
    "\\uffff", "\\u0001", "\\u001f", "\\u007f", "\\u0080", "\\u07ff", "\\u0800", "\\ud83d\\ude00", "\\uD83D\\uDE00",
    "\\udbff\\udfff", "\\ud800\\udc00", "\\ud800", "\\udbff", "\\udc00", "\\udfff", "\\ud83d\\u0041", "\\ude00\\ud83d",
    "\\ud83dx", "\\ud83d\\", "\\ud83d\\u", "\\ud83d\\ud83d", "\\u0000", "\\u12", "\\u123", "\\uZZZZ", "\\u+123",
    "\\u 123", "\\U0001F600", "\\x41", "\\a", "\\'", "\\0", "\\ ", "\\", "\\e", "\\v",
]

RAW_STRING_BYTES = [
    b"plain", b"", b"caf\xc3\xa9", b"\xe2\x9c\x93", b"\xf0\x9f\x98\x80", b"\xf4\x8f\xbf\xbf", b"\xef\xbf\xbf",
    b"\x7f", b"\x80", b"\xbf", b"\xc0\xaf", b"\xc1\xbf", b"\xc2", b"\xc2\x41", b"\xe0\x80\xaf", b"\xe0\xa0",
    b"\xed\xa0\x80", b"\xed\xbf\xbf", b"\xed\x9f\xbf", b"\xf0\x80\x80\xaf", b"\xf4\x90\x80\x80", b"\xf5\x80\x80\x80",
    b"\xf8\x88\x80\x80\x80", b"\xfe", b"\xff", b"\xef\xbb\xbf", b"a\x00b", b"\x00",
] + [bytes([c]) for c in range(0x20)]

WHITESPACE = [b"", b" ", b"\t", b"\n", b"\r", b"\r\n", b" \t\n\r ", b"\x0b", b"\x0c", b"\x00", b"\xc2\xa0",
              b"\xe2\x80\xa8", b"\xef\xbb\xbf", b"\xe3\x80\x80"]

STRUCTURE = [
    b"", b" ", b"{", b"}", b"[", b"]", b"{}", b"[]", b"[1,]", b"[,1]", b"[,]", b"[1,,2]", b"[1 2]", b'{"a"}',
    b'{"a":}', b'{"a":1,}', b"{,}", b"{a:1}", b"{'a':1}", b'{"a" 1}', b'{"a"::1}', b'{"a":1 "b":2}', b'{1:2}',
    b'{"a":1}', b'{"a":1,"b":[true,false,null]}', b'{"a":1,"a":2}', b'{"a":{"b":1},"a":{"b":1}}',
    b'{"":1}', b'{"":1,"":2}', b'{"\\u0061":1,"a":2}', b'{"a":1,"b":2,"c":3,"d":4,"e":5,"f":6,"g":7,"h":8,"i":9,"a":0}',
    b"true", b"false", b"null", b"True", b"FALSE", b"nul", b"nulll", b"tru", b"truex", b"t", b"n", b"f",
    b"[true false]", b"[null,]", b"{} x", b"[]]", b"[]}", b"{}}", b"1 2", b"{}{}", b"{}\x00", b"[1]\x00",
    b"\x00", b"[\x00]", b"\x00[]", b'"\x00"', b"null\n\n", b"\"abc", b"\"abc\\\"", b"'abc'", b"[\"a\",]",
    b"\xef\xbb\xbf{}", b"\xef\xbb\xbf\"a\"", b"\xef\xbb\xbf", b"{}\xef\xbb\xbf", b"\xfe\xff\x00{\x00}",
    b"\xff\xfe{\x00}\x00", b"\x00{\x00}", b'"\xed\xa0\x80"', b'{"\xed\xa0\x80":1}', b"[\xff]", b"\x80",
    b"/* c */ {}", b"{} // c", b"[1]/", b"#", b"@", b"\\", b"[\"\\u00e9\"]",
]


def nested(kind, depth, inner=b"1"):
    if kind == "array":
        return b"[" * depth + inner + b"]" * depth
    if kind == "object":
        return b'{"k":' * depth + inner + b"}" * depth
    out = b""
    for d in range(depth):
        out += b"[" if d % 2 == 0 else b'{"k":'
    out += inner
    for d in reversed(range(depth)):
        out += b"]" if d % 2 == 0 else b"}"
    return out


def random_value(rng, depth=0):
    kind = rng.choice(["num", "str", "lit"] + (["arr", "obj"] if depth < 6 else []))
    if kind == "num":
        sign = rng.choice(["", "", "-"])
        whole = rng.choice(["0", str(rng.randrange(1, 10 ** rng.randrange(1, 22)))])
        frac = rng.choice(["", "", "." + str(rng.randrange(10 ** rng.randrange(1, 6))).zfill(rng.randrange(1, 4))])
        exp = rng.choice(["", "", "", rng.choice("eE") + rng.choice(["", "+", "-"]) + str(rng.randrange(0, 500))])
        return (sign + whole + frac + exp).encode()
    if kind == "str":
        pieces = []
        for _ in range(rng.randrange(0, 6)):
            r = rng.random()
            if r < 0.4:
                pieces.append(rng.choice(["a", "Z", " ", "\u00e9", "\u2713", "\U0001F600", "\u0800", "\uffff",
                                          "\U0010FFFF"]).encode())
            elif r < 0.8:
                pieces.append(rng.choice(ESCAPES[:24]).encode())
            else:  # any code unit: surrogates alone or in pairs, rarely NUL
                pieces.append(("\\u%04x" % rng.randrange(1, 0x10000) if rng.random() < 0.9 else "\\u0000").encode())
        return b'"' + b"".join(pieces) + b'"'
    if kind == "lit":
        return rng.choice([b"true", b"false", b"null"])
    ws = lambda: rng.choice([b"", b"", b" ", b"\n", b"\t ", b"\r\n"])
    if kind == "arr":
        items = [random_value(rng, depth + 1) for _ in range(rng.randrange(0, 5))]
        return b"[" + ws() + (b"," + ws()).join(items) + ws() + b"]"
    keys = [b'"k%d"' % rng.randrange(0, 6) for _ in range(rng.randrange(0, 5))]  # repeats happen
    members = [k + ws() + b":" + ws() + random_value(rng, depth + 1) for k in keys]
    return b"{" + ws() + (b"," + ws()).join(members) + ws() + b"}"


MUTATION_BYTES = b'{}[]",:\\ -+.eE0159tfnu\x00\x7f\x80\xc3\xed\xef\xff\n\t'


def mutate(rng, doc):
    doc = bytearray(doc)
    for _ in range(rng.randrange(1, 4)):
        op = rng.randrange(3)
        pos = rng.randrange(len(doc) + 1)
        if op == 0 or not doc:
            doc[pos:pos] = bytes([rng.choice(MUTATION_BYTES)])
        elif op == 1:
            del doc[min(pos, len(doc) - 1)]
        else:
            doc[min(pos, len(doc) - 1)] = rng.choice(MUTATION_BYTES)
    return bytes(doc)


def corpus():
    docs = []
    for n in NUMBERS:
        t = n.encode()
        docs += [t, b"[" + t + b"]", b'{"n":' + t + b"}", b"[" + t + b",1]", b" " + t + b" ", t + b"x", t + b"\x00"]
    for e in ESCAPES:
        t = e.encode()
        docs += [b'"' + t + b'"', b'["a' + t + b'b"]', b'{"' + t + b'":1}']
    for raw in RAW_STRING_BYTES:
        docs += [b'"' + raw + b'"', b'{"' + raw + b'":0}', b"[" + raw + b"]"]
    for ws in WHITESPACE:
        docs += [ws + b"{}" + ws, b"[" + ws + b"1" + ws + b"," + ws + b"2" + ws + b"]",
                 b"{" + ws + b'"a"' + ws + b":" + ws + b"1" + ws + b"}", ws]
    docs += STRUCTURE
    for depth in list(range(1, 70)) + [100, 127, 128, 500, 999, 1000, 5000, 100000]:
        for kind in ("array", "object", "mixed"):
            docs.append(nested(kind, depth))
    docs += [nested("array", 64, b"[]"), nested("array", 63, b"[]"), nested("array", 64)[:-1],
             nested("array", 3) + b"]", b"[" * 64 + b"]" * 63, nested("object", 64, b"{}"), nested("object", 63, b"{}")]
    rng = random.Random(13)
    randoms = [random_value(rng) for _ in range(600)]
    docs += randoms
    docs += [mutate(rng, rng.choice(randoms + STRUCTURE[20:30])) for _ in range(1500)]
    return docs


CORPUS = corpus()


def test_corpus_agrees_with_python():
    tallies = {}
    for doc in CORPUS:
        outcome = compare(doc)
        tallies[outcome] = tallies.get(outcome, 0) + 1
    print(f"\nJSON differential: {len(CORPUS)} documents: " +
          ", ".join(f"{k} {v}" for k, v in sorted(tallies.items())))
    # The corpus must exercise both sides and every deliberate difference.
    assert tallies["ok"] > 700 and tallies["error"] > 700, tallies
    seen = {c for k in tallies if k.startswith("deliberate:") for c in k[len("deliberate:"):].split("+")}
    assert seen == set(DELIBERATE_WORDS), seen


# ---- the deliberate differences, one by one --------------------------------------------------

def refused(data, *words):
    with pytest.raises(ValueError) as info:
        testing._json_parse(data)
    for w in words:
        assert w in str(info.value), str(info.value)


@pytest.mark.parametrize("text", ["NaN", "Infinity", "-Infinity", "[NaN]", '{"a": Infinity}'])
def test_nan_and_infinity(text):
    json.loads(text)
    refused(text.encode())


@pytest.mark.parametrize("text", ['"\\ud800"', '"\\udc00"', '"\\ude00\\ud83d"', '"\\ud83d\\u0041"', '{"\\udbff": 1}'])
def test_lone_surrogate_escapes(text):
    assert any(0xD800 <= ord(c) <= 0xDFFF for c in json.dumps(json.loads(text), ensure_ascii=False))
    refused(text.encode(), "surrogate")


def test_nul_escape():
    assert json.loads('"a\\u0000b"') == "a\x00b"
    refused(b'"a\\u0000b"', "NUL")
    refused(b'{"\\u0000": 1}', "NUL")


def test_duplicate_keys():
    assert json.loads('{"a": 1, "a": 2}') == {"a": 2}
    refused(b'{"a": 1, "a": 2}', 'duplicate key "a"')
    many = b"{" + b",".join(b'"k%d":%d' % (i, i) for i in range(40)) + b',"k7":0}'
    refused(many, 'duplicate key "k7"')


def test_depth_limit_edges():
    for kind in ("array", "object", "mixed"):
        assert testing._json_parse(nested(kind, MAX_DEPTH)) is not None
        json.loads(nested(kind, MAX_DEPTH + 1))
        refused(nested(kind, MAX_DEPTH + 1), f"nesting deeper than {MAX_DEPTH}")
    refused(nested("array", 100000), f"nesting deeper than {MAX_DEPTH}")
    with pytest.raises(RecursionError):
        json.loads(nested("array", 100000))


def test_bom_and_surrogate_bytes():
    """json.loads(bytes) accepts a BOM and encoded surrogates; we do not (UTF-8 only)."""
    assert json.loads(b"\xef\xbb\xbf{}") == {}
    refused(b"\xef\xbb\xbf{}", "expected a value", "0xEF")
    with pytest.raises(ValueError):
        json.loads("\ufeff{}")  # the str form refuses it, as the reference does
    assert json.loads(b'"\xed\xa0\x80"') == "\ud800"
    refused(b'"\xed\xa0\x80"', "invalid UTF-8")
    utf16 = '{"a": 1}'.encode("utf-16-le")
    assert json.loads(utf16) == {"a": 1}  # Python guesses UTF-16 from the NUL bytes
    refused(utf16, "expected a string key")


def test_numbers_kept_exactly_up_to_two_to_the_64():
    assert testing._json_parse(b"[18446744073709551615, -18446744073709551615, -0, 0]") == \
        [2 ** 64 - 1, -(2 ** 64 - 1), 0, 0]
    assert testing._json_parse(b"[18446744073709551616, 1.0, 1e0, 1e400]") == \
        [("number", b"18446744073709551616"), ("number", b"1.0"), ("number", b"1e0"), ("number", b"1e400")]


def test_value_budget():
    """max_values bounds the values of one document (arrays and objects count too)."""
    doc = b'[1, [2, 3], {"a": 4}]'  # 7 values
    assert testing._json_parse(doc, 7) == [1, [2, 3], {"a": 4}]
    with pytest.raises(ValueError, match="more than 6 values"):
        testing._json_parse(doc, 6)
