"""Thin `ray job submit` entrypoints; all logic lives in the packages."""
