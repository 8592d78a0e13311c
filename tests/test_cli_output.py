"""The outputs' JSON is readable (a candidate's codes on one line) and equals what `json` reads back."""

from __future__ import annotations

import json
import math

import pytest

from clvp_jax.cli_output import dumps


def test_lists_of_values_stay_on_one_line_and_round_trip():
    value = {"chunks": [{"codes": [1, 2, 3], "score": 1.5, "ok": True, "none": None}], "empty": [], "d": {}}
    text = dumps(value)
    assert json.loads(text) == value and text.endswith("}\n")
    assert '   "codes": [1, 2, 3],' in text.splitlines()  # indented object, one-line list
    assert '"empty": []' in text and '"d": {}' in text
    assert dumps([[1, 2], [3]]) == "[\n [1, 2],\n [3]\n]\n"  # a list of lists: one inner list a line
    with pytest.raises(ValueError, match="not JSON compliant"):
        dumps({"score": math.nan})
