"""Idempotency keys: claim a key atomically, run once, replay the stored outcome to duplicates."""
