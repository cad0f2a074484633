"""The live dashboard: a small aiohttp service that tails ``tweets.sentiment`` and the model topic,
keeps bounded per-minute aggregates in memory, measures the processors' consumer lag, and pushes
snapshots to the browser over server-sent events. Run it with ``tweetpulse dashboard``.
"""
