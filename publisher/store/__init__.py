"""The SQLite store, the publisher's source of truth: ``Store`` (publisher/store/store.py)
composed of one mixin per family of rows, over the tables in publisher/store/schema.py."""

from publisher.store.store import Store

__all__ = ["Store"]
