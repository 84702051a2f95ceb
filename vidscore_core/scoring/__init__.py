"""Scorers that plug into the engine, and the table rows they produce."""
