"""The server's Settings for a command line: the root command's options (client/cli.py's
``RootOptions``), over the WHEELFARM_* variables of settings without an option."""

from __future__ import annotations

import click

from index_server.config import Settings, split_list

_KEY = "wheelfarm.settings"


def settings_from_options(options: dict[str, object]) -> Settings:
    """Options override the environment; settings without an option come from it."""
    return Settings.from_env(
        None,
        data_dir=options["data_dir"],
        database_url=options["database_url"],
        storage_url=options["storage_url"],
        admin_token=options["admin_token"] or None,
        upstream_urls=options["upstream_url"],
        read_requires_token=options["read_requires_token"],
        platforms_dir=options["platforms_dir"],
        max_upload_bytes=options["max_upload_bytes"],
        page_max_age=options["page_max_age"],
        upstream_ttl=options["upstream_ttl"],
        upstream_timeout=options["upstream_timeout"],
        private_projects=split_list(str(options["private_projects"]))
        if options["private_projects"]
        else None,
    )


def root_settings(ctx: click.Context) -> Settings:
    """The Settings of this command line, made once from the root command's options."""
    root = ctx.find_root()
    if _KEY not in root.meta:
        root.meta[_KEY] = settings_from_options(dict(root.obj.options))
    settings: Settings = root.meta[_KEY]
    return settings
