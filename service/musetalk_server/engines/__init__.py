"""Engines turn (avatar, 16 kHz audio) into BGR frames. `lite` runs anywhere; `musetalk` is v1.5."""
