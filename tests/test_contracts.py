import json
from datetime import UTC, datetime
from pathlib import Path

import jsonschema
import pytest

from tweetpulse.contracts import ContractError, RawTweet, SentimentResult, json_schemas


def _result(**overrides) -> SentimentResult:
    now = datetime.now(UTC)
    fields = dict(
        id="42",
        text="great flight",
        label="positive",
        probabilities={"negative": 0.1, "positive": 0.9},
        model_version="v1",
        ingested_at=now,
        classified_at=now,
    )
    return SentimentResult(**{**fields, **overrides})


def test_raw_tweet_round_trips_through_bytes() -> None:
    tweet = RawTweet(
        id="1", text="hello 🌍", source="twitter", rule_tags=["travel"], lang="en", author_id="7"
    )
    assert RawTweet.from_bytes(tweet.to_bytes()) == tweet
    assert tweet.key == b"1"


@pytest.mark.parametrize(
    ("payload", "problem"),
    [
        (b"{not json", "Invalid JSON"),
        (b'{"id": "1", "source": "replay"}', "text: Field required"),
        (b'{"id": "1", "text": "   ", "source": "replay"}', "text has no visible character"),
        (b'{"id": "1", "text": 5, "source": "replay"}', "text: Input should be a valid string"),
        (b'{"id": "1", "text": "hi", "source": "fax"}', "source"),
        (b'{"id": "1", "text": "hi", "source": "replay", "label": "meh"}', "label"),
        (b'{"id": "1", "text": "' + b"x" * 5000 + b'", "source": "replay"}', "at most 4000 characters"),
        (b"\xff\xfe\x00garbage", "not UTF-8"),
        (b'{"id": "a b", "text": "hi", "source": "replay"}', "id"),
    ],
)
def test_invalid_raw_tweet_is_rejected_with_the_reason(payload: bytes, problem: str) -> None:
    with pytest.raises(ContractError, match=problem):
        RawTweet.from_bytes(payload)


def test_sentiment_result_requires_a_probability_per_label() -> None:
    with pytest.raises(ContractError, match="probabilities"):
        SentimentResult.from_dict(
            json.loads(_result().model_dump_json()) | {"probabilities": {"positive": 1.0}}
        )


def test_messages_validate_against_the_exported_json_schema() -> None:
    schemas = json_schemas()
    jsonschema.validate(json.loads(_result().to_bytes()), schemas["sentiment-result"])
    raw = RawTweet(id="9", text="x", source="synthetic", created_at=datetime.now(UTC))
    jsonschema.validate(json.loads(raw.to_bytes()), schemas["raw-tweet"])
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"id": "9", "text": "x"}, schemas["raw-tweet"])


def test_committed_schema_files_match_the_contracts() -> None:
    folder = Path(__file__).resolve().parent.parent / "schemas"
    for name, schema in json_schemas().items():
        committed = json.loads((folder / f"{name}.v1.json").read_text())
        assert committed == schema, f"schemas/{name}.v1.json is stale: run `tweetpulse schemas export`"
