"""Live events: a job's state changes and the job counts, streamed to clients over SSE.

- publish: a service's state change -> stored event (storage) -> Redis pub/sub, after commit.
- channels: one channel per job and the stats channel; who may read each.
- storage: stored events (ids per channel) for Last-Event-ID replay.
- hub: each web process's one Redis subscription, fanning events out to its streams.
- direct: the hub writing an event straight to a caught-up client's connection.
- job_stream, stats_stream: the bodies of the two streams; views: their HTTP endpoints.
- asgi: SSE requests share a few threads and carry the server's `send` (snapasset.asgi).
- frames: the SSE wire format.

Why not django-eventstream's own ``events`` view and ``RedisListener`` (5.3.4, read before
writing this): its listener subscribes on a fixed channel shared by every deployment on the
Redis server, dies for good on a dropped connection (events are then lost until reconnect),
starts subscribing only with the first client (a gap for events sent meanwhile), and its
stream re-reads storage whenever an event arrives during its first read; it also has no
`connected`/`final` semantics, no end of stream, and answers forbidden as a 200 stream.
Its storage (ids per channel, no holes) and channel manager are used as they are.
"""
