"""modelog.models."""
