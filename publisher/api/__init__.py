"""The Config API and the webhook over HTTP: one Starlette app (``app.create_app``)."""
