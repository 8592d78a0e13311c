"""Convert a checkpoint: original Tortoise files or an HF folder -> a clvp-jax checkpoint or an HF folder.

    python convert/convert_checkpoint.py SRC DST [--format clvp-jax|hf] [--dtype ...] [--dry-run] [--force]

A thin script over `clvp_jax.checkpoint.convert_cli` (the same as the installed `clvp-jax-convert` and
`clvp-jax convert` commands); run it with clvp-jax installed. `--help` lists every option.
"""

import sys

from clvp_jax.checkpoint.convert_cli import main

if __name__ == "__main__":
    sys.exit(main())
