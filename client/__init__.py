"""The wheelfarm client: what a CI job or a build machine runs against a server over HTTP.

``wheelfarm warm`` and ``wheelfarm request`` (``client.warm``), the platform and tracking
commands over the admin API (``client.platform_commands``), and the worker's command
(``wheelfarm worker``, the glue around ``builder.worker``). It needs only the base
distribution's dependencies (``pip install wheelfarm``) and never imports ``index_server``:
the root command (``client.cli.main``, the ``wheelfarm`` entry point) loads the server's
commands by name, where the ``server`` extra is installed.
"""
