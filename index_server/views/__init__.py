"""HTTP views: thin wrappers that parse requests and call the index's functions."""
