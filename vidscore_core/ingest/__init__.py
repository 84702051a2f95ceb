"""Ingest of meta files: reading them, video ids, batch manifests and `videos` rows."""
