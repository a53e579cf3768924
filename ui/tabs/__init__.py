"""The tabs, one module each: its controls, its events and its API endpoints.

A tab may import the shared building blocks in `ui/` (fields, form, common, gpu, studio, stops,
history) and `llm_dit`; the building blocks never import a tab.
"""
