"""Progress lines while a checkpoint is read: one per file, on standard error, none with -q, none for library users."""

from __future__ import annotations

import argparse
import re

from clvp_jax import cli_common
from clvp_jax.checkpoint import load_params
from clvp_jax.checkpoint.progress import reporting


def test_each_file_read_is_reported_with_its_size_and_time(tortoise_tiny, capsys):
    with cli_common.loading(argparse.Namespace(verbose=0, quiet=False)):
        load_params(tortoise_tiny.folder)
    lines = capsys.readouterr().err.splitlines()
    assert [re.sub(r"\[ *[0-9.]+ s\]", "[t]", line) for line in lines] == [
        "clvp-jax: [t] reading autoregressive.pth (1 MB)",
        "clvp-jax: [t] reading clvp2.pth (1 MB)",
    ]


def test_quiet_and_library_loads_print_nothing(tortoise_tiny, capsys):
    with cli_common.loading(argparse.Namespace(verbose=0, quiet=True)):
        load_params(tortoise_tiny.folder)
    load_params(tortoise_tiny.folder)  # no `reporting` block: silent
    seen = []
    with reporting(seen.append), reporting(None):  # an inner block can silence an outer one
        load_params(tortoise_tiny.folder)
    assert capsys.readouterr().err == "" and seen == []
