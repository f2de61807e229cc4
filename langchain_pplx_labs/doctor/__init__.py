"""``pplx-labs doctor``: one question walked step by step (``walk``), over Labs (``labs``) or the web app (``web``)."""
