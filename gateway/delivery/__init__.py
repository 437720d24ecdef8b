"""Delivery: workers that move outbox rows to platforms, and the pure retry policy."""
