"""modelog.dashboard."""
