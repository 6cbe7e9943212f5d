"""Humans in the loop: the review queue, the allow-list an overturn feeds, and replay.

- :mod:`.model`: queued items and reviews, and the ``{"type": "review"}`` record (no I/O).
- :mod:`.allow`: the allow-list consulted before any engine.
- :mod:`.sqlite_store`, :mod:`.redis_store`: where the queue lives (one daemon, or a group).
- :mod:`.service`: the daemon's side: the sink that queues, the feed of reviews.
- :mod:`.replay`: deciding recorded lines again under a new config (no I/O of its own).
"""
