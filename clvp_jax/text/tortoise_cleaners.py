"""Tortoise's own English text cleaning (`english_cleaners` of tortoise-tts), built on `unidecode` and `inflect`.

This is the normalisation the real Tortoise models were trained on; `normalizer.normalize` is transformers'
re-implementation of it, which differs in its number reading. `clean(text)` applies, in this order:

1. ASCII: `unidecode` transliterates ("café" -> "cafe", "“x”" -> '"x"', "—" -> "--", "中文" -> "Zhong Wen ",
   "£" -> "PS", "€" -> "EUR"); what it cannot spell (emoji) is dropped. 2. lowercase.
3. numbers, each rule seeing the previous one's output:
   a. commas inside digit groups are removed ("12,345" -> "12345");
   b. "$D.C" is spelled as dollars and cents with digits ("$2.50" -> "2 dollars, 50 cents"), more than one
      period gives "D.C.E dollars";
   c. "3.14" -> "3 point 14";
   d. ordinals are read by inflect ("2nd" -> "second", "21st" -> "twenty-first");
   e. integers are read by inflect without "and"; 1001-2999 are years: "1900" -> "nineteen hundred",
      "2005" -> "two thousand five", "1859" -> "eighteen fifty-nine", "1905" -> "nineteen oh five".
   The "£" rule of Tortoise never fires (unidecode has already turned "£" into "PS") and is left out.
4. the abbreviations of `normalizer.ABBREVIATIONS` followed by a period ("dr." -> "doctor"), one after another.
5. every whitespace run becomes one space (a leading or trailing one stays); `"` is deleted.

Output is ASCII and lowercase. Differences from tortoise-tts, all on inputs where it raises instead of returning:
- a dollar amount whose parts hold stray commas ("$,5", "$5,.5": `int(",5")` raises there) is read with the
  commas ignored ("five dollars", "five dollars, five cents"), as `normalizer.normalize` does.
- an integer with more than 36 significant digits (inflect's limit, `NumOutOfRangeError` there) raises
  `NumberTooLongError`, a ValueError that names the number and what to do; leading zeros do not count, so a
  5000-character "000...01" reads "one" (Python's 4300-digit `int()` limit makes tortoise-tts raise on it).
"""

from __future__ import annotations

import functools
import re

from unidecode import unidecode

from clvp_jax.text.normalizer import expand_abbreviations

MAX_DIGITS = 36  # inflect names groups up to "decillion" (10**33), so it reads integers below 10**36

_DIGIT = re.compile(r"[0-9]")
_GROUPED = re.compile(r"[0-9][0-9,]+[0-9]")
# Digits, periods and commas ending in a digit (Tortoise writes `[0-9.,]*[0-9]+`, which matches the same spans).
_DOLLARS = re.compile(r"\$([0-9.,]*[0-9])")
_DECIMAL = re.compile(r"[0-9]+\.[0-9]+")
_ORDINAL = re.compile(r"[0-9]+(?:st|nd|rd|th)")
_INTEGER = re.compile(r"[0-9]+")
_WHITESPACE = re.compile(r"\s+")


class NumberTooLongError(ValueError):
    """An integer of the text has more digits than Tortoise's number reader (inflect) can name."""


@functools.cache
def _engine():
    # Imported on first use: `import inflect` takes about two seconds (typeguard instruments it).
    import inflect

    return inflect.engine()


def _too_long(digits: str) -> NumberTooLongError:
    shown = digits if len(digits) <= 24 else f"{digits[:12]}...{digits[-6:]}"
    return NumberTooLongError(
        f"the number {shown} has {len(digits)} digits; Tortoise's normaliser (inflect) reads at most "
        f"{MAX_DIGITS}. Write it in words, or put spaces between groups of digits so each is read on its own."
    )


def _spell(num: int | str, **options: str | int) -> str:
    """inflect's words for `num`, with its out-of-range error turned into `NumberTooLongError`."""
    import inflect

    try:
        return _engine().number_to_words(num, **options)
    except inflect.NumOutOfRangeError:
        raise _too_long(str(num)) from None


@functools.lru_cache(maxsize=1 << 16)
def read_integer(digits: str) -> str:
    """Words of one digit string the Tortoise way: see step 3e of the module docstring.

    Raises:
        NumberTooLongError: more than `MAX_DIGITS` significant digits.
    """
    digits = digits.lstrip("0") or "0"
    if len(digits) > MAX_DIGITS:  # checked before int(), which refuses strings of more than 4300 digits
        raise _too_long(digits)
    num = int(digits)
    if not 1000 < num < 3000:
        return _spell(num, andword="")
    if num == 2000:
        return "two thousand"
    if 2000 < num < 2010:
        return "two thousand " + _spell(num % 100)
    if num % 100 == 0:
        return _spell(num // 100) + " hundred"
    # Pairs of digits: "18", "59" -> "eighteen, fifty-nine"; a zero digit reads "oh" ("19", "05" -> "oh five").
    return _spell(num, andword="", zero="oh", group=2).replace(", ", " ")


@functools.lru_cache(maxsize=1 << 14)
def read_ordinal(token: str) -> str:
    """Words of one ordinal such as "21st" (inflect reads the digits and picks the ordinal form itself)."""
    digits = token[:-2].lstrip("0")
    if len(digits) > MAX_DIGITS:
        raise _too_long(digits)
    return _spell(token)


def _read_dollars(match: re.Match) -> str:
    amount = match.group(1)
    parts = amount.split(".")
    if len(parts) > 2:
        return amount + " dollars"  # not an amount (Tortoise's rule); the digits are read by the later rules
    # The digits are written back without leading zeros ("$1.05" -> "1 dollar, 5 cents"); stray commas, on which
    # Tortoise's int() raises, are ignored.
    dollars = parts[0].replace(",", "").lstrip("0")
    cents = parts[1].replace(",", "").lstrip("0") if len(parts) > 1 else ""
    dollar_unit = "dollar" if dollars == "1" else "dollars"
    cent_unit = "cent" if cents == "1" else "cents"
    if dollars and cents:
        return f"{dollars} {dollar_unit}, {cents} {cent_unit}"
    if dollars:
        return f"{dollars} {dollar_unit}"
    if cents:
        return f"{cents} {cent_unit}"
    return "zero dollars"


def expand_numbers(text: str) -> str:
    """Spell out the numbers of lowercase ASCII text (step 3 of the module docstring)."""
    if not _DIGIT.search(text):
        return text
    if "," in text:
        text = _GROUPED.sub(lambda m: m.group(0).replace(",", ""), text)
    if "$" in text:
        text = _DOLLARS.sub(_read_dollars, text)
    if "." in text:
        text = _DECIMAL.sub(lambda m: m.group(0).replace(".", " point "), text)
    text = _ORDINAL.sub(lambda m: read_ordinal(m.group(0)), text)
    return _INTEGER.sub(lambda m: read_integer(m.group(0)), text)


def clean(text: str) -> str:
    """Tortoise's `english_cleaners`: ASCII, lowercase, numbers and abbreviations spelled out, one space per run.

    Args:
        text: raw text.

    Returns:
        lowercase ASCII text without `"`, whose only whitespace is single spaces.

    Raises:
        NumberTooLongError: an integer has more than `MAX_DIGITS` significant digits.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    if not text.isascii():
        text = unidecode(text)
    text = expand_numbers(text.lower())
    text = expand_abbreviations(text)
    if "  " in text or not text.isprintable():  # any other whitespace than " " is unprintable
        text = _WHITESPACE.sub(" ", text)
    return text.replace('"', "")
