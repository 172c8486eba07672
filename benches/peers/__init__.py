"""Peers of the HTTP benchmark: the same API built the way such services usually are."""
