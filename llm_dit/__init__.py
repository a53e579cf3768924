"""llm_dit: a compact Z-Image pipeline package with prompt control and (later) VL conditioning.

It knows nothing of gradio; `ui/` and `app.py` build the web app on top of it.
"""

__version__ = "0.1.0"
