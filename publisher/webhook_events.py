"""A control plane's webhook events, each applied once (publisher/api/webhook.py is the HTTP side).

Unlike a Config API write, an event is recorded in the transaction that applies it: a resend
gets the first reply back, and a refused event leaves no record to block its corrected resend.
The reply recorded is replaced when the publish after the COMMIT is left pending.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from publisher.core.model import SOURCE_TYPES, Source
from publisher.core.specs import InstanceSpec, SpecBuilder, check_slug
from publisher.errors import InvalidArgument, NotFound
from publisher.publish import PublishResult
from publisher.staging import Staging


class WebhookEvents(SpecBuilder, Staging):
    """``Service``'s webhook write (a mixin)."""

    def apply_webhook(self, workspace_slug: str, source_slug: str, source_type: str | None,
                      specs: Sequence[InstanceSpec], *, revision: int, event_id: str,
                      render: Callable[[Source, PublishResult], dict[str, Any]]
                      ) -> tuple[int, dict[str, Any], bool]:
        """Apply a control plane's desired set once per ``event_id``, newest revision only.

        Returns ``(status, body, duplicate)``. The event record, the source (created when
        ``source_type`` is given and it does not exist), the instances and the bundle row are
        one transaction; a refused change records nothing, so the sender may fix and resend.
        """
        with self._writing():
            seen = self.store.get_webhook_event(event_id)
            if seen is not None:
                return seen.status, seen.response, True
            ws = self.workspace(workspace_slug)
            source = self.store.get_source(ws.id, source_slug)
            if source is None and source_type is None:
                raise NotFound(f"source {source_slug!r} not found in workspace "
                               f"{workspace_slug!r} (send 'type' to create it)")
            if source is None:
                check_slug("source", source_slug)
                if source_type not in SOURCE_TYPES:
                    raise InvalidArgument(
                        f"type must be one of {', '.join(SOURCE_TYPES)}, got "
                        f"{source_type!r}", code="invalid_source_type")
                source = self.store.create_source(ws.id, source_slug, source_slug,
                                                  source_type)
            elif source_type is not None and source_type != source.type:
                raise InvalidArgument(
                    f"source {source_slug!r} is a {source.type} source, the event says "
                    f"{source_type!r} (a source's type cannot change)",
                    code="source_type_change")
            if revision <= source.revision:
                body: dict[str, Any] = {
                    "status": "ignored", "event_id": event_id,
                    "reason": f"revision {revision} is not newer than the stored revision "
                              f"{source.revision}",
                    "revision": source.revision}
                self.store.record_webhook_event(event_id, source.id, 200, body)
                return 200, body, False
            existing = self.store.list_instances(source.id)
            desired = self.build_instances(source, existing, specs)
            staged = self._commit(source, existing, desired, revision=revision)
            body = {"status": "applied", "event_id": event_id,
                    **render(staged.source, self._result(staged))}
            self.store.record_webhook_event(event_id, source.id, 200, body)
        published = self._publish(staged)
        if published.pending:  # a duplicate delivery gets this reply, not the one recorded
            body = {**body, **render(staged.source, published)}
            self.store.update_webhook_response(event_id, body)
        return 200, body, False
