"""The index's database: tables, connections and migrations."""
