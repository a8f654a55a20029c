"""The owner's web dashboard: a local page for what the chat is bad at showing.

Server-rendered by aiohttp + Jinja2 on the gateway's event loop (dashboard/server.py), with one
small script for the live feed (static/live.js, shipped here, never from a CDN). It imports only
`core` and itself; the gateway hands it a `dashboard.backend.Backend` (docs/ARCHITECTURE.md,
"The dashboard").
"""
