"""Recordings' bytes: where they are stored (data dir), and how they are fetched from a PBX."""
