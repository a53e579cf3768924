"""Core: what a request is and how a prompt becomes embeddings — the request declarations (fields,
ranges, choices, validation), prompt and template formatting, text encoding and sequence
resampling, images and PNG info, presets, device helpers and the errors every room shares.

May import `serving` only.
"""
