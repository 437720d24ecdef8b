"""Pure core: event model, normalisation, mapping helpers. No I/O, no clock, no randomness."""
