"""Pipelines: a request in, images and metadata out — txt2img / img2img (`generate`), the VL
style-transfer recipe (`recipe`), the token preview and prompt rewriting.

May import `runtime`, `conditioning`, `core` and `serving`.
"""
