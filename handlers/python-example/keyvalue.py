"""A dict-like view of one wasi:keyvalue store, over componentize-py's bindings.

    with Store("counts") as counts:      # the store's name in arrpc.toml
        counts["greeting"] = b"hello"    # values are bytes
        counts["greeting"]               # b"hello"; KeyError when missing
        counts.get("other")              # None when missing
        "greeting" in counts             # True
        del counts["greeting"]           # a missing key is no error
        list(counts.keys())              # every key, page after page
        counts.increment("visits", 5)    # atomic; the new value, an int
        counts.update("doc", change)     # read, change, write, atomically

The host lets a handler open only the stores its `stores` lists. Every
failure of the store raises `StoreError`, whose text is the WIT error's
case: `no-such-store`, `access-denied` or `other: <why>`.
"""

from collections.abc import Callable, Iterator

import wit_world
from wit_world.imports import atomics, store


class StoreError(Exception):
    """A store operation failed. `error` is the WIT `error`; the text is its
    case as WIT spells it, `other` with the host's words."""

    def __init__(self, error: store.Error):
        self.error = error
        if isinstance(error, store.Error_NoSuchStore):
            text = "no-such-store"
        elif isinstance(error, store.Error_AccessDenied):
            text = "access-denied"
        else:
            text = f"other: {error.value}"
        super().__init__(text)


def _call(operation, *args):
    """Runs one operation of the bindings, raising its error as a StoreError."""
    try:
        return operation(*args)
    except wit_world.Err as e:
        raise StoreError(e.value) from None


class Store:
    """One open store. Use it in a `with` block, which gives the store's
    handle back to the host at its end, or call `close()`."""

    def __init__(self, name: str):
        self.name = name
        self._bucket = _call(store.open, name)

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._bucket.__exit__(None, None, None)

    def __getitem__(self, key: str) -> bytes:
        value = self.get(key)
        if value is None:
            raise KeyError(key)
        return value

    def get(self, key: str, default: bytes | None = None) -> bytes | None:
        value = _call(self._bucket.get, key)
        return default if value is None else value

    def __setitem__(self, key: str, value: bytes) -> None:
        _call(self._bucket.set, key, bytes(value))

    def __delitem__(self, key: str) -> None:
        # The store's delete does not say whether the key was there, and
        # asking first would be a second call that another writer can race.
        _call(self._bucket.delete, key)

    def __contains__(self, key: str) -> bool:
        return _call(self._bucket.exists, key)

    def keys(self) -> Iterator[str]:
        """Every key, in no promised order, fetching one page at a time."""
        cursor = None
        while True:
            page = _call(self._bucket.list_keys, cursor)
            yield from page.keys
            cursor = page.cursor
            if cursor is None:
                return

    def __iter__(self) -> Iterator[str]:
        return self.keys()

    def increment(self, key: str, by: int = 1) -> int:
        """Adds `by` to the integer under `key` (a missing key counts as 0)
        in one step however many handlers do the same, and returns the sum.
        The value is stored as its decimal text: `get` returns b"3"."""
        return _call(atomics.increment, self._bucket, key, by)

    def update(self, key: str, change: Callable[[bytes | None], bytes]) -> bytes:
        """Replaces the value under `key` with `change(value)` (None when
        missing) and returns what was written. Compare-and-swap: when
        another writer changed the key in between, `change` runs again on
        its value, so no write is lost."""
        cas = _call(atomics.Cas.new, self._bucket, key)
        while True:
            value = change(_call(cas.current))
            try:
                # swap takes the handle, whether it succeeds or not.
                atomics.swap(cas, value)
                return value
            except wit_world.Err as e:
                if not isinstance(e.value, atomics.CasError_CasFailed):
                    raise StoreError(e.value.value) from None
                cas = e.value.value
