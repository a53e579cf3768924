"""Serving: what every request passes through, whoever runs it — the hosting policy (what a remote
client may choose), cancellation, timelines, the output folder and the HTTP client.

Lowest room of the house: imports nothing else from `llm_dit`.
"""
