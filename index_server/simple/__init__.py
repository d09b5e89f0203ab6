"""The Simple Repository API (PEP 503, 691, 658/714, 700): formats and pages."""
