"""Viewing sessions sent as they happen (`POST /events`), kept in an event log until a model takes
them in, and held by every serving worker for the next request.

- `batch.py`: a request body checked and cleaned by the sessions file's own drop rules;
- `log.py`: the durable log, an append-only file (one host) or a Redis stream (with REDIS_URL),
  read by the workers as it grows and by `als_fit.py --update --events`, trimmed after the update;
- `held.py`: the sessions a worker holds per viewer, bounded, folded into the ranking on request.
"""
