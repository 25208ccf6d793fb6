"""Helpers for the store and durability tests (worker scripts spawned as real processes)."""
