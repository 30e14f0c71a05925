"""Media in and out: numpy arrays in, bytes out. No HTTP here."""
