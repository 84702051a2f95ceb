"""The Open-Sora compatible CSV commands: score, score all, dedup."""
