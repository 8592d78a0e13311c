"""English text normaliser of the CLVP tokenizer, as pure functions.

`normalize(text)` reproduces transformers' `EnglishNormalizer` (spec section 11, step 2) character for character:

1. ASCII: every non-ASCII character is dropped ("café" -> "caf"). 2. lowercase.
3. numbers: digit-group commas removed; "$D.C" spelled as dollars and cents; "3.14" -> "3 point 14";
   ordinals as number words with the suffix glued on ("21st" -> "twenty-onest", a reference quirk kept for id
   parity); plain integers as words, with years 1001-2999 read Tortoise's way ("1900" -> "nineteen hundred").
4. abbreviations followed by a period ("dr." -> "doctor"), applied one after another in the reference's order.
5. every whitespace run becomes one space; `"` is deleted.

Deliberate differences from the reference, both for inputs on which the reference raises instead of returning:
- a dollar amount whose parts hold stray commas ("$,5", "$5,.5") raises ValueError in the reference; here the
  commas are ignored ("5 cents").
- integers longer than 4300 digits make the reference's `int()` raise; here they read "number out of range" like
  every other integer of 10**18 or more.

`ascii_mode="transliterate"` replaces step 1 by a Tortoise-like transliteration (Tortoise runs `unidecode`):
accents are stripped with Unicode NFKD ("café" -> "cafe"), typographic quotes, dashes and ellipses become
their ASCII forms, a few letters without a decomposition are spelled out ("ß" -> "ss", "æ" -> "ae"), pound,
euro and yen amounts are read as words ("£5" -> "5 pounds"), and whatever is left outside ASCII (CJK, emoji) is
dropped. It needs no extra dependency; `unidecode` would also romanise CJK, which the English vocabulary cannot
pronounce anyway. Ids differ from the reference only for texts that contain non-ASCII characters.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from typing import Literal

AsciiMode = Literal["drop", "transliterate"]

_ONES = ("", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
_TEENS = (
    "ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen",
)  # fmt: skip
_TENS = ("", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")
# (power of ten, name), largest first; 10**18 and above is "number out of range" in the reference.
_SCALES = ((15, "quadrillion"), (12, "trillion"), (9, "billion"), (6, "million"), (3, "thousand"))
_OUT_OF_RANGE = "number out of range"

# Abbreviation -> expansion, in the reference's order (order matters: each rule sees the previous one's output).
ABBREVIATIONS = (
    ("mrs", "misess"), ("mr", "mister"), ("dr", "doctor"), ("st", "saint"), ("co", "company"),
    ("jr", "junior"), ("maj", "major"), ("gen", "general"), ("drs", "doctors"), ("rev", "reverend"),
    ("lt", "lieutenant"), ("hon", "honorable"), ("sgt", "sergeant"), ("capt", "captain"), ("esq", "esquire"),
    ("ltd", "limited"), ("col", "colonel"), ("ft", "fort"),
)  # fmt: skip
_ABBREVIATION_RES = tuple((abbr, re.compile(rf"\b{abbr}\.", re.IGNORECASE), word) for abbr, word in ABBREVIATIONS)
_WORD_BEFORE_PERIOD = re.compile(r"\b([A-Za-z]+)\.")

_DIGIT = re.compile(r"[0-9]")
_GROUPED = re.compile(r"([0-9][0-9,]+[0-9])")
_POUNDS = re.compile(r"£([0-9,]*[0-9])")
_DOLLARS = re.compile(r"\$([0-9.,]*[0-9])")
_DECIMAL = re.compile(r"([0-9]++\.[0-9]+)")
_ORDINAL = re.compile(r"[0-9]++(st|nd|rd|th)")
_INTEGER = re.compile(r"[0-9]+")
_WHITESPACE = re.compile(r"\s+")

# Transliteration: characters NFKD leaves non-ASCII that have an obvious ASCII spelling.
_TRANSLITERATIONS = str.maketrans(
    {
        "\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'", "\u2032": "'", "\u00b4": "'",
        "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u201f": '"', "\u2033": '"', "\u00ab": '"', "\u00bb": '"',
        "\u2010": "-", "\u2011": "-", "\u2012": "-", "\u2013": "-", "\u2014": "-", "\u2015": "-", "\u2212": "-",
        "\u2026": "...", "\u00b7": ".", "\u00d7": "x", "\u00df": "ss", "\u00e6": "ae", "\u00c6": "AE",
        "\u0153": "oe", "\u0152": "OE", "\u00f8": "o", "\u00d8": "O", "\u0111": "d", "\u0110": "D",
        "\u0142": "l", "\u0141": "L", "\u00fe": "th", "\u00de": "Th", "\u00f0": "d", "\u00d0": "D",
        "\u0131": "i", "\u00a0": " ", "\u3000": " ", "\u2044": "/",
    }
)  # fmt: skip
_FOREIGN_MONEY = re.compile(r"([£€¥])([0-9,]*[0-9])")
_FOREIGN_UNITS = {"£": "pounds", "€": "euros", "¥": "yen"}


def _strip_zeros(digits: str) -> str:
    return digits.lstrip("0") or "0"


def number_to_words(num: int | str) -> str:
    """Spell a non-negative integer (an int or a string of digits) the reference's way.

    Groups are joined with ", " ("one thousand, two"), tens and units with "-" ("forty-five"); 10**18 and above
    reads "number out of range"; a negative int reads "minus ...". A string avoids `int()` on huge inputs.
    """
    if isinstance(num, int):
        if num < 0:
            return "minus " + number_to_words(-num)
        digits = str(num)
    else:
        digits = _strip_zeros(num)
    if len(digits) > 18:
        return _OUT_OF_RANGE
    return _spell(int(digits))


def _spell(num: int) -> str:
    if num == 0:
        return "zero"
    if num < 10:
        return _ONES[num]
    if num < 20:
        return _TEENS[num - 10]
    if num < 100:
        tens, unit = divmod(num, 10)
        return _TENS[tens] + ("-" + _ONES[unit] if unit else "")
    if num < 1000:
        hundreds, rest = divmod(num, 100)
        return _ONES[hundreds] + " hundred" + (" " + _spell(rest) if rest else "")
    for power, name in _SCALES:
        if num >= 10**power:
            head, rest = divmod(num, 10**power)
            return _spell(head) + " " + name + (", " + _spell(rest) if rest else "")
    raise AssertionError("unreachable")


def _read_integer(match: re.Match) -> str:
    return _read_digits(match.group(0))


@functools.lru_cache(maxsize=1 << 16)
def _read_digits(digits: str) -> str:
    """Words of one integer (digit string) with the reference's special reading of years 1001..2999."""
    digits = _strip_zeros(digits)
    if len(digits) == 4 and "1000" < digits < "3000":  # years: 1001..2999 (same length, so string order works)
        num = int(digits)
        if num == 2000:
            return "two thousand"
        if num < 2010 and num > 2000:
            return "two thousand " + _spell(num % 100)
        if num % 100 == 0:
            return _spell(num // 100) + " hundred"
    return number_to_words(digits)


def _read_ordinal(match: re.Match) -> str:
    digits = match.group(0)[:-2]
    last_two = int(digits[-2:])
    if 10 <= last_two <= 20:
        suffix = "th"
    else:
        suffix = {1: "st", 2: "nd", 3: "rd"}.get(last_two % 10, "th")
    return number_to_words(digits) + suffix


def _read_dollars(match: re.Match) -> str:
    amount = match.group(1)
    parts = amount.split(".")
    if len(parts) > 2:
        return amount + " dollars"
    # Stray commas (the reference raises on them) are ignored.
    dollars = _strip_zeros(parts[0].replace(",", "") or "0")
    cents = _strip_zeros(parts[1].replace(",", "") or "0") if len(parts) > 1 else "0"
    dollar_unit = "dollar" if dollars == "1" else "dollars"
    cent_unit = "cent" if cents == "1" else "cents"
    if dollars != "0" and cents != "0":
        return f"{dollars} {dollar_unit}, {cents} {cent_unit}"
    if dollars != "0":
        return f"{dollars} {dollar_unit}"
    if cents != "0":
        return f"{cents} {cent_unit}"
    return "zero dollars"


def normalize_numbers(text: str) -> str:
    """Spell out the numbers of lowercase ASCII text (step 3 above)."""
    if not _DIGIT.search(text):
        return text
    if "," in text:
        text = _GROUPED.sub(lambda m: m.group(1).replace(",", ""), text)
    if "£" in text:  # never true after ASCII-isation (dead in the reference too); kept for its order
        text = _POUNDS.sub(r"\1 pounds", text)
    if "$" in text:
        text = _DOLLARS.sub(_read_dollars, text)
    if "." in text:
        text = _DECIMAL.sub(lambda m: m.group(1).replace(".", " point "), text)
    text = _ORDINAL.sub(_read_ordinal, text)
    return _INTEGER.sub(_read_integer, text)


def expand_abbreviations(text: str) -> str:
    """Expand "mr." and the other abbreviations of `ABBREVIATIONS`, one rule after another."""
    if "." not in text:
        return text
    # A rule can only fire on a word that was already followed by a period, so rules for absent words are skipped.
    present = {word.lower() for word in _WORD_BEFORE_PERIOD.findall(text)}
    for abbr, pattern, word in _ABBREVIATION_RES:
        if abbr in present:
            text = pattern.sub(word, text)
    return text


def transliterate(text: str) -> str:
    """Tortoise-like ASCII transliteration: see the module docstring."""
    text = _FOREIGN_MONEY.sub(lambda m: f"{m.group(2)} {_FOREIGN_UNITS[m.group(1)]}", text)
    text = unicodedata.normalize("NFKD", text.translate(_TRANSLITERATIONS))
    return text.translate(_TRANSLITERATIONS)


def normalize(text: str, ascii_mode: AsciiMode = "drop") -> str:
    """Normalise one text segment exactly as the reference tokenizer does (with `ascii_mode="drop"`).

    Args:
        text: raw text (special-token strings must already be split out; the reference normalises the pieces
            between them separately).
        ascii_mode: "drop" deletes non-ASCII characters (reference); "transliterate" converts them first.

    Returns:
        lowercase ASCII text with numbers and abbreviations spelled out and whitespace runs collapsed.
    """
    if ascii_mode == "transliterate":
        text = transliterate(text)
    elif ascii_mode != "drop":
        raise ValueError(f"ascii_mode must be 'drop' or 'transliterate', got {ascii_mode!r}")
    if not text.isascii():
        text = text.encode("ascii", "ignore").decode("ascii")
    text = normalize_numbers(text.lower())
    text = expand_abbreviations(text)
    if "  " in text or not text.isprintable():  # other whitespace than " " is unprintable
        text = _WHITESPACE.sub(" ", text)
    return text.replace('"', "")
