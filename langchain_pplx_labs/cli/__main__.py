"""``python -m langchain_pplx_labs.cli``: the ``pplx-labs`` command without its script."""

from langchain_pplx_labs.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
