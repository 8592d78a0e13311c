"""Handing freed host memory back to the OS.

glibc keeps the memory of freed mid-sized blocks in its heap: after large frees (the XLA compiler's working
memory, or the host copies of checkpoint tensors on their way to the device) a process's resident size stays
hundreds of MiB above what it uses, and that counts in its peak. `malloc_trim` returns those pages.
"""

from __future__ import annotations

import ctypes
import sys


def release_freed_memory() -> None:
    """Return the heap pages glibc keeps after frees to the OS; a no-op on other C libraries and platforms."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):  # not glibc (e.g. musl)
            pass
