"""Client-side commands for CI jobs and admins: ``wheelfarm request`` and ``wheelfarm warm``.

Modules: ``client`` (the server's JSON API and index pages), ``environment`` (a platform's
marker environment), ``pages`` (PEP 691 pages: versions, wheels), ``pip_resolve`` and
``pip_shim`` (pip's resolver for a platform), ``lockfiles`` (pylock.toml, uv.lock),
``report`` (progress, tables, JSON) and ``commands`` (the click commands).
"""
