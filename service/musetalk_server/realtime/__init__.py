"""Only for `musetalk_server/client.py`, which imports the wire format from here until it moves to its
own distribution; the real-time code lives in `render/realtime/`. Delete this package with that move."""
