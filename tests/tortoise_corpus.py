"""Texts for the Tortoise normaliser (`normalizer="tortoise"`) and the script that stores Tortoise's ids for them.

`texts()` is deterministic: hand-written edge cases, sentences made from templates with a seeded RNG (numbers,
ordinals, years, money in dollars, cents, pounds and pence, decimals, percentages, abbreviations, times, non-ASCII
text, punctuation and whitespace runs, long and negative numbers, mixed case), and the generic tokenizer corpus
of `text_corpus`. Every text is one that tortoise-tts encodes without raising.

Run from the repository root with tortoise-tts installed (it needs torch) to regenerate the stored ids:

    PYTHONPATH=$PWD .venv/bin/python tests/tortoise_corpus.py

which writes `tests/data/tortoise_normaliser_corpus.json`: the library versions, then one entry per text with the
text, Tortoise's cleaned text (`english_cleaners`) and its ids (`VoiceBpeTokenizer().encode`).
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

from text_corpus import ABBREVIATIONS, NAMES, WORDS  # the same vocabulary as the hf-normaliser corpus

DATA = Path(__file__).resolve().parent / "data" / "tortoise_normaliser_corpus.json"

EDGE_CASES = [
    "",
    " ",
    "  \t\n ",
    "Hello world",
    " leading and trailing spaces ",
    "2nd 3rd 21st 22nd 101st 111th 112th 1000th 0th 00th 007th",
    "1859 1900 1905 1999 2000 2001 2009 2010 2019 2999 3000 1000 1001 1010 1100",
    "In 1066, in 1492 and in 1776; by 2024 or 2525.",
    "0 00 007 10 13 19 20 21 99 100 101 110 999 1000 10000 100000 1000000",
    "12,345 1,000,000 1,2,3 ,5 5, 1,,000 123,45",
    "$5 $5.50 $0.01 $0.99 $.5 $1 $1.00 $1.01 $1.05 $0 $0.00 $007 $1,000,000.99 $1.2.3 $12,34",
    "It costs $3.50, or 350 cents, or 5 pence, or \u00a35, or \u00a31.20, or 3 pounds 20 pence.",
    "\u20ac10 \u00a53 \u00a2 \u20b9100 \u20a9 5\u00a2",
    "3.14 0.5 .5 5. 1.2.3 10.000 99.99 0.001",
    "50% 100% 3.5% -2% 0% 12.5 percent",
    "9:30 12:00 0:05 23:59:59 9:30 a.m. 5 p.m. 10am 4PM",
    "-5 -3.14 -1st -2000 --7 - 8 +5 5-6 1/2 3/4 24/7 1x2 3*4=12 2^10",
    "Mr. Mrs. Dr. St. Co. Jr. Maj. Gen. Drs. Rev. Lt. Hon. Sgt. Capt. Esq. Ltd. Col. Ft.",
    "mr mrs dr st co jr maj gen drs rev lt hon sgt capt esq ltd col ft",
    "MR. SMITH met DR. JONES at ST. PAUL'S, not at dr.st. or mr.mrs. or Mr.Smith.",
    "Dr Who, St Ives, Mt. Everest, etc., e.g., i.e., vs. U.S.A. and U.K.",
    "caf\u00e9 na\u00efve r\u00e9sum\u00e9 \u00fcber Stra\u00dfe \u00c6sir \u0153uvre \u00f8re \u00e5ngstr\u00f6m ni\u00f1o fa\u00e7ade",
    "\u00c9COLE \u00c0 LA CR\u00c8ME BR\u00dbL\u00c9E, \u0160KODA, \u0141\u00d3D\u0179, \u00de\u00d3R",
    "\u4f60\u597d\u4e16\u754c \u4e2d\u6587 \u3053\u3093\u306b\u3061\u306f \u30ab\u30bf\u30ab\u30ca \ud55c\uad6d\uc5b4",
    "\u0417\u0434\u0440\u0430\u0432\u0441\u0442\u0432\u0443\u0439 \u043c\u0438\u0440, \u039a\u03b1\u03bb\u03b7\u03bc\u03ad\u03c1\u03b1, \u0645\u0631\u062d\u0628\u0627, \u05e9\u05dc\u05d5\u05dd",
    "Emoji \U0001f600\U0001f389\U0001f680 and \u2764\ufe0f and \U0001f44d\U0001f3fd and flags \U0001f1ec\U0001f1e7",
    "\u201cCurly double\u201d and \u2018curly single\u2019 and \u201elow\u201c and \u00abguillemets\u00bb",
    "dashes \u2013 en \u2014 em \u2015 bar \u2212 minus \u2010 hyphen; ellipsis\u2026 bullet \u2022 middle\u00b7dot",
    "\u00bd \u00bc \u00be \u2153 \u2122 \u00ae \u00a9 \u00b0C \u00b0F \u00b5s \u2103 \u2116 \u00a7 \u00b6 \u2020",
    "\uff26\uff55\uff4c\uff4c\uff57\uff49\uff44\uff54\uff48 \uff11\uff12\uff13 and \u2460\u2461 and \u2167",
    "non\u00a0breaking\u3000ideographic\u2009thin\u200bzero-width\u200dspace\ufeffbom",
    "What?!?! No... way -- really;; (yes) [no] {maybe} <tag> @user #hash & ^ * _ + = | \\ / ~ `",
    "!!!!!!!! ???? ...... ,,,, ;;;; :::: ---- '''' \"\"\"\" (((( ))))",
    "Hello  world\t\tagain\n\nand again  \r\n end",
    "\x00\x01\x07\x1b\x7f control \x1c\x1d\x1e\x1f separators \x0b\x0c",
    "[STOP] [UNK] [SPACE] <|endoftext|> [stop] [space]",
    "It's, it'll, you've, I'M, WE'RE, y'all, rock'n'roll, 'tis, o'clock, O'Neil's.",
    "snake_case_name and CamelCaseName and kebab-case-name",
    "9999999999999999 99999999999999999 999999999999999999 1000000000000000000 12345678901234567890",
    "1" * 36,
    "9" * 36 + "th",
    "0" * 50 + "42",
    "aBc DeF gHi JKL mno PqR sTuV wXyZ",
    "a" * 300,
    "word " * 80,
]

_FOREIGN = ("caf\u00e9", "na\u00efve", "\u00fcber", "ni\u00f1o", "fa\u00e7ade", "\u4e2d\u6587", "\U0001f680",
            "\u00e5ngstr\u00f6m", "\u0161ko\u0161", "\u2014", "\u2013", "\u2026", "\u00bd", "\u2122", "\u00b0C",
            "\u201cquote\u201d", "\u2018it\u2019s\u2019", "\u00c9mile", "Z\u00fcrich", "\u6771\u4eac", "\U0001f600",
            "\u00a9", "\u00d7", "\u00f7", "\u00b1", "\u2192", "\u221e", "\u00a0")  # fmt: skip
_OTHER_CURRENCIES = ("\u20ac", "\u00a5", "US$", "USD ", "\u20b9")
_PUNCT = (".", ",", "!", "?", ";", ":", "...", "?!", "!!!", " --", ")", '"', "'", " -", "\u2026", "\u2014")
_WHITESPACE = ("  ", "\t", " \n ", "\r\n", "   \t ", "\u00a0", "\u2003")


def _integer(rng: random.Random) -> str:
    digits = rng.choice([1, 1, 2, 2, 3, 4, 5, 6, 7, 9, 12, 15, 18, 21, 27, 33, 36])
    value = rng.randrange(10 ** (digits - 1), 10**digits) if digits > 1 else rng.randrange(10)
    if rng.random() < 0.25:
        return f"{value:,}"
    if rng.random() < 0.1:
        return "0" * rng.randint(1, 3) + str(value)
    return str(value)


def _money(rng: random.Random) -> str:
    amount = rng.choice([0, 1, 2, 5, 20, rng.randrange(1000), rng.randrange(10**7)])
    form = rng.randrange(9)
    if form == 0:
        return f"${amount}"
    if form == 1:
        return f"${amount}.{rng.randrange(100):02d}"
    if form == 2:
        return f"${amount:,}.{rng.randrange(10)}"
    if form == 3:
        return f"$.{rng.randrange(1, 100)}"
    if form == 4:
        return f"{rng.randrange(1, 100)} cents"
    if form == 5:
        return f"\u00a3{amount:,}" + (f".{rng.randrange(100):02d}" if rng.random() < 0.5 else "")
    if form == 6:
        return f"{amount} pounds and {rng.randrange(100)} pence"
    if form == 7:
        return f"{rng.choice(_OTHER_CURRENCIES)}{amount}"
    return f"${amount}.{rng.randrange(1000)}.{rng.randrange(10)}"


def _ordinal(rng: random.Random) -> str:
    n = rng.choice([rng.randrange(0, 40), rng.randrange(100, 130), rng.randrange(1, 10**6), rng.randrange(10**12)])
    suffix = rng.choice(["st", "nd", "rd", "th"])  # often the wrong one, as in real typos
    return f"{n:,}{suffix}" if rng.random() < 0.2 else f"{n}{suffix}"


def _time(rng: random.Random) -> str:
    hour, minute = rng.randrange(0, 24), rng.randrange(60)
    return rng.choice(
        [f"{hour}:{minute:02d}", f"{hour % 12 + 1}:{minute:02d} {rng.choice(['a.m.', 'p.m.', 'AM', 'pm'])}",
         f"{hour}h{minute:02d}", f"{hour:02d}:{minute:02d}:{rng.randrange(60):02d}", f"{hour % 12 + 1}pm"]
    )  # fmt: skip


def _number_like(rng: random.Random) -> str:
    kind = rng.randrange(8)
    if kind == 0:
        return _integer(rng)
    if kind == 1:
        return f"in {rng.randrange(1000, 3100)}"
    if kind == 2:
        return f"{rng.randrange(1000)}.{rng.randrange(10 ** rng.randint(1, 4))}"
    if kind == 3:
        return f"{rng.choice(['', '-', '+'])}{rng.randrange(200)}{rng.choice(['%', '.5%', ' percent'])}"
    if kind == 4:
        return f"-{_integer(rng)}"
    if kind == 5:
        return f"the {rng.randrange(1900, 2030)}s"
    if kind == 6:
        return f"{rng.randrange(1, 32)}/{rng.randrange(1, 13)}/{rng.randrange(1800, 2100)}"
    return f"{rng.randrange(100)}-{rng.randrange(100)}"


def _sentence(rng: random.Random) -> str:
    words = [rng.choice(WORDS) for _ in range(rng.randint(2, 16))]
    for _ in range(rng.choice([1, 1, 1, 2, 3])):
        kind = rng.randrange(8)
        if kind == 0:
            item = _number_like(rng)
        elif kind == 1:
            item = _money(rng)
        elif kind == 2:
            item = _ordinal(rng)
        elif kind == 3:
            item = _time(rng)
        elif kind == 4:
            period = "." if rng.random() < 0.7 else ""
            abbr = rng.choice(ABBREVIATIONS)
            abbr = abbr.upper() if rng.random() < 0.2 else abbr
            item = f"{abbr}{period} {rng.choice(NAMES)}"
        elif kind == 5:
            item = rng.choice(_FOREIGN)
        elif kind == 6:
            item = rng.choice(["it's", "don't", "I'll", "we've", "she'd", "they're", "I'm", "O'Neil's", "a_b"])
        else:
            item = rng.choice(_PUNCT) * rng.randint(1, 4)
        words.insert(rng.randrange(len(words) + 1), item)
    case = rng.random()
    if case < 0.4:
        words[0] = words[0].capitalize()
    elif case < 0.5:
        words = [w.upper() for w in words]
    elif case < 0.6:
        words = [w.title() for w in words]
    text = " ".join(words) + rng.choice(_PUNCT)
    if rng.random() < 0.15:
        text = text.replace(" ", rng.choice(_WHITESPACE), rng.randint(1, 3))
    if rng.random() < 0.1:
        text = rng.choice(['"{}"', "\u201c{}\u201d", "({})", "  {}  "]).format(text)
    return text


def texts(n: int = 500, seed: int = 17) -> list[str]:
    """The edge cases, `n` generated sentences and 200 texts of the generic tokenizer corpus (deterministic)."""
    from text_corpus import corpus

    rng = random.Random(seed)
    out = EDGE_CASES + [_sentence(rng) for _ in range(n)] + corpus(200, seed=seed)[-200:]
    return list(dict.fromkeys(out))


def load() -> dict:
    """The stored corpus: {"versions": {...}, "entries": [{"text", "cleaned", "ids"}, ...]}."""
    return json.loads(DATA.read_text(encoding="utf-8"))


def _generate() -> None:
    from importlib.metadata import version

    from tortoise.utils.tokenizer import VoiceBpeTokenizer, english_cleaners

    reference = VoiceBpeTokenizer()
    entries = [{"text": t, "cleaned": english_cleaners(t), "ids": reference.encode(t)} for t in texts()]
    versions = {name: version(name) for name in ("tortoise-tts", "inflect", "unidecode", "tokenizers")}
    # One entry a line: readable, and a regenerated file diffs line by line.
    lines = [json.dumps(entry, ensure_ascii=True) for entry in entries]
    body = ",\n".join(lines)
    DATA.write_text(f'{{"versions": {json.dumps(versions)},\n"entries": [\n{body}\n]}}\n', encoding="utf-8")
    print(f"{len(entries)} texts -> {DATA} ({versions})")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    _generate()
