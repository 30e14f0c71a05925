"""The render use cases: one entry that checks and admits a render (entry.py), the checked
request it renders (request.py), the sinks over its frames (sinks/), the async-MP4 job queue
(async_jobs.py) and the real-time session core (realtime/)."""
