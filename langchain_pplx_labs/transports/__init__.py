"""HTTP transports: the seam (``base.py``) and one module per implementation (``aiohttp.py``)."""
