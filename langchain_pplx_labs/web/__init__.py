"""The web app's service: its SSE framing (``sse``), its codec (``codec``) and a session on it (``session``)."""
