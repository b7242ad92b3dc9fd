"""The web app: server-rendered pages over the Config API's write path (publisher/web/app.py)."""
