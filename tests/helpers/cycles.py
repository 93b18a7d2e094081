"""What the cyclic garbage collector alone would free: the proxy64 objects in cycles."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def cyclic_garbage() -> Iterator[list[str]]:
    """Inside: the cyclic collector is off (only reference counting frees objects) and
    saves what it finds instead of freeing it. On a normal exit the list yielded holds the
    qualified type names of the proxy64 objects that were left in reference cycles."""
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    found: list[str] = []
    try:
        yield found
        gc.collect()
        found.extend(sorted({_owner(o) for o in gc.garbage if _owner(o).startswith("proxy64.")}))
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()


def _owner(obj: object) -> str:
    """The qualified name of obj's type; a bound method counts as its object's."""
    owner = type(getattr(obj, "__self__", obj))
    return f"{owner.__module__}.{owner.__qualname__}"
