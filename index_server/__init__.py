"""The index server: serves each platform's Simple Repository API and accepts uploads."""
