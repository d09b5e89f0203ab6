"""Client-side commands for CI jobs and admins: ``wheelfarm request`` and ``wheelfarm warm``.

Modules: ``client`` (the server's JSON API and index pages), ``environment`` (a platform's
marker environment), ``pages`` (PEP 691 pages: versions, wheels), ``requirements``
(requirement files as text, includes inlined), ``resolution`` (their closure, resolved by a
worker of the platform through the server), ``lockfiles`` (pylock.toml, uv.lock, read here),
``pins`` (one distribution of a closure), ``report`` (progress, tables, JSON) and
``commands`` (the click commands).
"""
