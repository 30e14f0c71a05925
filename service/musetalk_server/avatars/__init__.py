"""Avatars: the on-disk format, the atomic store and the preprocessing entry."""
