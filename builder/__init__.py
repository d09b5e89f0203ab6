"""The builder farm: turns sdists into wheels inside containers of each platform.

Filled in by the builder issue; the index server does not depend on it.
"""
