"""Conditioning: Qwen3-VL hidden-state extraction, the blend into the text embeddings and its
statistics, and the layer scan. Functions take the model manager as an argument; they never load.

May import `core` and `serving`.
"""
