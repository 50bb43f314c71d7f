"""modelog.store."""
