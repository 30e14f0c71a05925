"""The device: its scheduler (admission, per-frame priority, drain) and what the machine has free."""
