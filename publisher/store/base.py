"""What the row-family mixins of :class:`publisher.store.Store` may call, for the type checker.

``Store`` is put together from one mixin per family of tables; the core they all use (the write
connection, ``transaction()``, the read helpers) stays in ``store/store.py`` beside the locks it
guards. Each mixin derives from :class:`StoreBase`, whose declarations let ``mypy --strict``
check every call across the split; at run time ``StoreBase`` is an empty class, and every call
a mixin makes is answered by ``Store`` itself.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from publisher.core.model import Source


class StoreBase:
    """What every row family may use of the store; :class:`~publisher.store.Store` has it."""

    # The write connection. Mixins write through it only inside ``transaction()``, which
    # holds its lock; reads go through ``_one``/``_all``/``_read``, which pick the connection.
    _conn: sqlite3.Connection

    if TYPE_CHECKING:
        def transaction(self) -> AbstractContextManager[None]: ...

        def _read(self) -> AbstractContextManager[sqlite3.Connection]: ...

        def _one(self, sql: str, args: Sequence[Any] = ()) -> sqlite3.Row | None: ...

        def _all(self, sql: str, args: Sequence[Any] = ()) -> list[sqlite3.Row]: ...

        # (store/sources.py has it; store/instances.py checks the source exists before a write)
        def _require_source(self, source_id: int) -> Source: ...
