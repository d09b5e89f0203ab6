"""The upstream index (PyPI by default): fetched pages, their shared cache, pulled files."""
