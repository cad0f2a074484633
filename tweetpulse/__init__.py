"""TweetPulse core: settings, message contracts, Kafka helpers, model registry client and CLI."""

__version__ = "0.1.0"
