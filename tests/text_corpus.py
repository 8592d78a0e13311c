"""Deterministic English test corpus for the tokenizer (parity tests and the front-end benchmark).

`corpus()` returns hand-written edge cases plus sentences generated from templates with a seeded RNG: numbers of
every size, years, money, decimals, ordinals, abbreviations with and without periods, apostrophes, punctuation
runs, special-token strings inside text, emoji / CJK / accented text, empty and whitespace-only strings.
Inputs on which the reference tokenizer itself raises (a dollar amount with stray commas such as "$,5") are left
out here and tested separately.
"""

from __future__ import annotations

import random

EDGE_CASES = [
    "",
    " ",
    "   ",
    "\t\n",
    " \u00a0 \u3000 ",
    "Hello world",
    " Hello world",
    "This is an example text.",
    "Hello  world\t\tagain\n\nand again  ",
    "[STOP]",
    "[UNK]",
    "<|endoftext|>",
    "[SPACE]",
    "[stop] [Stop] <|ENDOFTEXT|>",
    "a[STOP]b[UNK]c<|endoftext|>d",
    "[[STOP]]<|endoftext|><|endoftext|> [STOP] [STOP]",
    "Numbers [STOP]12[STOP]34 and $5[UNK].",
    "\"Quoted\" text and 'single quotes' and \u201ccurly\u201d \u2018ones\u2019.",
    "It's, it'll, you've, I'M, WE'RE, y'all, rock'n'roll, 'tis, o'clock.",
    "What?!?! No... way -- really;; (yes) [no] {maybe} <tag> @user #hash %50 & ^ * _ + = | \\ / ~ `",
    "caf\u00e9 na\u00efve r\u00e9sum\u00e9 \u00fcber Stra\u00dfe \u00c6sir \u0153uvre \u00f8re",
    "\u00a35 and \u20ac10 and \u00a51,000",
    "Emoji \U0001f600\U0001f389 and CJK \u4f60\u597d\u4e16\u754c and \u3053\u3093\u306b\u3061\u306f!",
    "\u0417\u0434\u0440\u0430\u0432\u0441\u0442\u0432\u0443\u0439 \u043c\u0438\u0440 and \u0645\u0631\u062d\u0628\u0627",
    "$0.01 $.5 $1 $1.00 $1.01 $0 $0.00 $2.50 $1,000,000.99 $1.2.3 $12,34",
    "3.14 0.5 .5 5. 1.2.3 10.000",
    "1st 2nd 3rd 4th 11th 12th 13th 21st 22nd 23rd 101st 111th 112th 1000th 1,000,000th",
    "0 00 007 10 19 20 99 100 101 999 1000 1001 1100 1900 1984 1999 2000 2001 2009 2010 2999 3000",
    "9999999999999999 99999999999999999 999999999999999999 1000000000000000000 12345678901234567890",
    "Mr. Mrs. Dr. St. Co. Jr. Maj. Gen. Drs. Rev. Lt. Hon. Sgt. Capt. Esq. Ltd. Col. Ft.",
    "mr mrs dr st co jr maj gen drs rev lt hon sgt capt esq ltd col ft",
    "MR. SMITH met DR. JONES at ST. PAUL'S, not at dr.st. or mr.mrs.",
    "-5 degrees, +3 points, 5-6 people, 1/2 cup, 50% off, 24/7, 9:30 a.m.",
    "ALL CAPS SENTENCE WITH NUMBERS 42 AND $3.50.",
    "\x00\x01\x07\x1b\x7f control \x1c\x1d\x1e\x1f separators",
    "a" * 300,
    "word " * 80,
]

WORDS = (
    "the a of and to in is was he she it they we you that for on with as his her at by from this had not are "
    "but or have be one all which there were their when would your can said what about out if up so some "
    "voice speech model audio text sound quiet loud river mountain garden morning evening yesterday tomorrow "
    "quickly slowly strange beautiful ordinary important wonderful tortoise hare question answer"
).split()
NAMES = ("Smith", "Jones", "Watson", "Holmes", "Brown", "Garcia", "O'Brien", "McDonald", "Lee", "Nguyen")
ABBREVIATIONS = ("Mr", "Mrs", "Dr", "St", "Co", "Jr", "Maj", "Gen", "Drs", "Rev", "Lt", "Hon", "Sgt", "Capt",
                  "Esq", "Ltd", "Col", "Ft")  # fmt: skip
_FOREIGN = ("caf\u00e9", "na\u00efve", "\u00fcber", "ni\u00f1o", "fa\u00e7ade", "\u4e2d\u6587", "\U0001f680",
            "\u00e5ngstr\u00f6m", "\u0161ko\u0161", "\u2014", "\u2026", "\u00bd", "\u2122", "\u00b0C")  # fmt: skip
_PUNCT = (".", ",", "!", "?", ";", ":", "...", "?!", "!!!", " --", ")", '"', "'")
_SPECIAL = ("[STOP]", "[UNK]", "<|endoftext|>", "[SPACE]", "[stop]")


def _number(rng: random.Random) -> str:
    digits = rng.randint(1, 19)
    value = rng.randrange(10 ** (digits - 1), 10**digits) if digits > 1 else rng.randrange(10)
    if rng.random() < 0.3:
        return f"{value:,}"
    return str(value)


def _money(rng: random.Random) -> str:
    dollars = rng.choice([0, 1, 2, rng.randrange(1000), rng.randrange(10**7)])
    form = rng.randrange(5)
    if form == 0:
        return f"${dollars}"
    if form == 1:
        return f"${dollars}.{rng.randrange(100):02d}"
    if form == 2:
        return f"${dollars:,}.{rng.randrange(10)}"
    if form == 3:
        return f"$.{rng.randrange(1, 100)}"
    return f"${dollars}.{rng.randrange(1000)}.{rng.randrange(10)}"


def _ordinal(rng: random.Random) -> str:
    n = rng.choice([rng.randrange(1, 40), rng.randrange(100, 130), rng.randrange(1, 10**6)])
    return f"{n}{rng.choice(['st', 'nd', 'rd', 'th'])}"


def _sentence(rng: random.Random) -> str:
    words = [rng.choice(WORDS) for _ in range(rng.randint(3, 18))]
    kind = rng.randrange(10)
    slot = rng.randrange(len(words) + 1)
    if kind == 0:
        words.insert(slot, _number(rng))
    elif kind == 1:
        words.insert(slot, f"in {rng.randrange(1000, 3100)}")
    elif kind == 2:
        words.insert(slot, _money(rng))
    elif kind == 3:
        words.insert(slot, f"{rng.randrange(1000)}.{rng.randrange(10 ** rng.randint(1, 4))}")
    elif kind == 4:
        words.insert(slot, _ordinal(rng))
    elif kind == 5:
        period = "." if rng.random() < 0.7 else ""
        abbr = rng.choice(ABBREVIATIONS)
        abbr = abbr.upper() if rng.random() < 0.2 else abbr
        words.insert(slot, f"{abbr}{period} {rng.choice(NAMES)}")
    elif kind == 6:
        words.insert(slot, rng.choice(_FOREIGN))
    elif kind == 7:
        words.insert(slot, rng.choice(_SPECIAL))
    elif kind == 8:
        words.insert(slot, rng.choice(["it's", "don't", "I'll", "we've", "she'd", "they're", "I'm", "O'Neil's"]))
    else:
        words.insert(slot, rng.choice(_PUNCT) * rng.randint(1, 3))
    if rng.random() < 0.5:
        words[0] = words[0].capitalize()
    text = " ".join(words) + rng.choice(_PUNCT)
    if rng.random() < 0.1:
        text = text.replace(" ", rng.choice(["  ", "\t", " \n "]), 2)
    if rng.random() < 0.1:
        text = f'"{text}"'
    return text


def corpus(n: int = 600, seed: int = 0) -> list[str]:
    """The edge cases followed by `n` generated sentences (deterministic for a given seed)."""
    rng = random.Random(seed)
    return EDGE_CASES + [_sentence(rng) for _ in range(n)]


def plain_sentences(n: int, seed: int = 1) -> list[str]:
    """`n` distinct generated sentences (for the benchmark)."""
    rng = random.Random(seed)
    sentences: dict[str, None] = {}
    while len(sentences) < n:
        sentences[_sentence(rng)] = None
    return list(sentences)
