"""Durable storage: the outbox of deliveries (and, later, visitor profiles and rollups)."""
