"""Producers: tweets into the raw topic from the X API (``xapi``), files (``replay``) and a generator
(``synthetic``), all through one idempotent Kafka sink (``sink``); ``cli`` adds ``tweetpulse produce``."""
