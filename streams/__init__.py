"""modelog.streams."""
