"""The static export: every page and file of every platform's index, written to a folder
(for nginx) or an S3 bucket (for a CDN), kept current from the database's change serials.

The index server stays the write path and the source of truth and knows nothing of the
export; ``wheelfarm export [--follow]`` writes it (see ``exporter`` for how it follows the
changes and ``targets`` for the atomic writes). For open-read indexes only.
"""
