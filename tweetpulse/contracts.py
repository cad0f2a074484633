"""Versioned JSON message contracts shared by producers, processors and downstream consumers.

Every message is a JSON object with a ``schema_version``; the Kafka key is the tweet id (UTF-8).
``tweetpulse schemas export DIR`` writes the JSON Schema of each contract.
"""

from __future__ import annotations

import json
import re
import unicodedata
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_core import PydanticCustomError

SCHEMA_VERSION = 1
MAX_TEXT_CHARS = (
    4_000  # X allows 280 (25k for premium long posts are truncated upstream); anything bigger is abuse.
)

MAX_RULE_TAGS = 32  # tags per tweet; X attaches one per matching filtered-stream rule
MAX_TAG_CHARS = 64
MAX_AGGREGATE_TAG_CHARS = MAX_TAG_CHARS + 1  # "#" and a hashtag of up to 64 characters
MAX_ERROR_CHARS = 1_024  # a dead letter's error text

# Everything a producer can put in a message is bounded, so that no valid input makes an output (a
# result is the input plus a few fixed fields) larger than processor.max_message_bytes allows.
Label = Literal["negative", "positive"]
LABELS: tuple[Label, ...] = ("negative", "positive")
Source = Literal["twitter", "replay", "synthetic"]
IDENTIFIER = r"^[A-Za-z0-9_.:-]+$"
TweetId = Annotated[str, Field(min_length=1, max_length=64, pattern=IDENTIFIER)]
AuthorId = Annotated[str, Field(min_length=1, max_length=64, pattern=IDENTIFIER)]
Lang = Annotated[str, Field(min_length=1, max_length=16, pattern=r"^[A-Za-z0-9-]+$")]
ModelVersion = Annotated[str, Field(min_length=1, max_length=64, pattern=IDENTIFIER)]

# C0 controls other than tab and newlines, DEL, and lone surrogates (they cannot be encoded as UTF-8).
_UNPRINTABLE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")


def _printable(text: str) -> str:
    if _UNPRINTABLE.search(text):
        raise PydanticCustomError("control_characters", "contains control characters or lone surrogates")
    return text


def _visible(text: str) -> str:
    """At least one character that is neither whitespace nor invisible (zero-width, BOM, controls)."""
    stripped = text.strip()
    if not stripped or not any(unicodedata.category(c)[0] not in "ZC" for c in stripped):
        raise PydanticCustomError("blank_text", "text has no visible character")
    return text


# Every instant a contract admits is in UTC and within these bounds, so that any later use is safe:
# differences (latencies), window arithmetic and epoch conversions never overflow or mix naive with
# aware values. A value without a timezone is taken as UTC (Python's utcnow().isoformat() writes one).
MIN_TIME = datetime(2000, 1, 1, tzinfo=UTC)
MAX_TIME = datetime(2100, 1, 1, tzinfo=UTC)


def _utc_in_range(value: datetime) -> datetime:
    # Years first: converting a year-1 or year-9999 value with an offset to UTC would overflow.
    if not MIN_TIME.year - 1 <= value.year <= MAX_TIME.year:
        raise PydanticCustomError("datetime_out_of_range", "datetime must lie in [2000, 2100) UTC")
    value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    if not MIN_TIME <= value < MAX_TIME:
        raise PydanticCustomError("datetime_out_of_range", "datetime must lie in [2000, 2100) UTC")
    return value


Timestamp = Annotated[datetime, AfterValidator(_utc_in_range)]
Text = Annotated[str, Field(min_length=1, max_length=MAX_TEXT_CHARS), AfterValidator(_printable)]
TweetText = Annotated[Text, AfterValidator(_visible)]
RuleTag = Annotated[str, Field(min_length=1, max_length=MAX_TAG_CHARS), AfterValidator(_printable)]
RuleTags = Annotated[list[RuleTag], Field(max_length=MAX_RULE_TAGS)]


class ContractError(ValueError):
    """A message does not follow its contract; the message says which field and why."""


def utcnow() -> datetime:
    return datetime.now(UTC)


class _Contract(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=False)

    def to_bytes(self) -> bytes:
        return self.model_dump_json(exclude_none=True).encode()

    @classmethod
    def from_bytes(cls: type[C], data: bytes | str) -> C:
        """Parse and validate one message, raising :class:`ContractError` on any problem."""
        if isinstance(data, bytes):
            try:
                data = data.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise ContractError(f"message is not UTF-8: {exc}") from None
        try:
            return cls.model_validate_json(data)
        except ValidationError as exc:
            raise ContractError(describe_validation_error(exc)) from None

    @classmethod
    def from_dict(cls: type[C], data: dict[str, Any]) -> C:
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise ContractError(describe_validation_error(exc)) from None


C = TypeVar("C", bound=_Contract)


class RawTweet(_Contract):
    """A tweet as it enters the pipeline (topic ``tweets.raw``)."""

    schema_version: Literal[1] = SCHEMA_VERSION
    id: TweetId
    text: TweetText
    created_at: Timestamp | None = None
    author_id: AuthorId | None = None
    lang: Lang | None = None
    source: Source
    rule_tags: RuleTags = Field(default_factory=list)
    ingested_at: Timestamp = Field(default_factory=utcnow)
    label: Label | None = None

    @property
    def key(self) -> bytes:
        return self.id.encode()


class SentimentResult(_Contract):
    """One classification result (topic ``tweets.sentiment``)."""

    schema_version: Literal[1] = SCHEMA_VERSION
    id: TweetId
    text: Text
    label: Label
    probabilities: dict[Label, float]
    model_version: ModelVersion
    rule_tags: RuleTags = Field(default_factory=list)
    source: Source | None = None
    true_label: Label | None = None
    ingested_at: Timestamp
    classified_at: Timestamp
    inference_ms: float | None = Field(None, ge=0)

    @field_validator("probabilities")
    @classmethod
    def _probabilities_cover_labels(cls, value: dict[str, float]) -> dict[str, float]:
        if set(value) != set(LABELS):
            raise ValueError(f"probabilities must have exactly the keys {list(LABELS)}")
        if any(not 0.0 <= p <= 1.0 for p in value.values()):
            raise ValueError("probabilities must lie in [0, 1]")
        return value

    @property
    def key(self) -> bytes:
        return self.id.encode()


class DeadLetter(_Contract):
    """A message that could not be processed (topic ``tweets.dlq``).

    The original bytes are kept up to a limit (processor.dlq_max_value_bytes), with the original's size
    and SHA-256, so that the dead letter of any message fits on the topic.
    """

    schema_version: Literal[1] = SCHEMA_VERSION
    error: str = Field(max_length=MAX_ERROR_CHARS)
    reason: str = Field(min_length=1, max_length=64, pattern=r"^[a-z0-9-]+$")
    source_topic: str = Field(min_length=1, max_length=249)
    source_partition: int = Field(ge=0)
    source_offset: int = Field(ge=0)
    original_key_b64: str | None = None  # the original key's first 1 KiB
    original_value_b64: str
    original_size: int = Field(0, ge=0)  # bytes of the original value
    original_sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")
    truncated: bool = False  # the key or value kept here is only the original's first bytes
    failed_at: Timestamp = Field(default_factory=utcnow)
    stage: str = "processor"


class ModelAnnouncement(_Contract):
    """A model version made production (compacted topic ``tweetpulse.models``, key ``production``)."""

    schema_version: Literal[1] = SCHEMA_VERSION
    version: ModelVersion  # a hint only: workers load what the registry's PRODUCTION pointer names
    registry_root: str = Field(max_length=4_096)
    announced_at: Timestamp = Field(default_factory=utcnow)


class LabeledTweet(_Contract):
    """A labeled tweet for retraining (topic ``tweets.labeled``): human feedback or a weak label.

    Weak labels come from an unambiguous emoticon/emoji (``cue``), which is stripped from ``text``.
    """

    schema_version: Literal[1] = SCHEMA_VERSION
    id: TweetId
    text: TweetText
    label: Label
    source: Literal["human", "weak"]
    labeled_at: Timestamp = Field(default_factory=utcnow)
    cue: str | None = Field(None, max_length=64)

    @property
    def key(self) -> bytes:
        return self.id.encode()


class DriftEvent(_Contract):
    """The classified stream moved away from its reference (topic ``tweets.drift``)."""

    schema_version: Literal[1] = SCHEMA_VERSION
    window_start: Timestamp
    window_end: Timestamp
    count: int = Field(ge=1)
    positive_rate: float = Field(ge=0, le=1)
    mean_confidence: float = Field(ge=0, le=1)
    reference_count: int = Field(ge=1)
    reference_positive_rate: float = Field(ge=0, le=1)
    reference_mean_confidence: float = Field(ge=0, le=1)
    reasons: list[str] = Field(min_length=1)  # which thresholds were crossed, with the numbers
    model_version: ModelVersion | None = None
    detected_at: Timestamp = Field(default_factory=utcnow)


Count = Annotated[int, Field(ge=0, le=10**12)]
AggregateTag = Annotated[str, Field(min_length=1, max_length=MAX_AGGREGATE_TAG_CHARS)]


class LabelCounts(_Contract):
    """Tweets per label in one tumbling window, in all and per aggregate tag (:func:`aggregate_tags`;
    a tweet counts once under each of its tags).

    On ``tweets.sentiment.agg`` (key: ``window_start``) each record is the window's running total, so
    the last record per key is the total. A worker's count events (its internal topic) carry the
    same shape as increments, which the count agent adds up.
    """

    schema_version: Literal[1] = SCHEMA_VERSION
    window_start: Timestamp
    window_end: Timestamp
    tweets: dict[Label, Count]
    tags: dict[AggregateTag, dict[Label, Count]]
    updated_at: Timestamp = Field(default_factory=utcnow)

    @property
    def key(self) -> bytes:
        return self.window_start.isoformat().encode()


CONTRACTS: dict[str, type[_Contract]] = {
    "raw-tweet": RawTweet,
    "sentiment-result": SentimentResult,
    "dead-letter": DeadLetter,
    "model-announcement": ModelAnnouncement,
    "labeled-tweet": LabeledTweet,
    "drift-event": DriftEvent,
    "label-counts": LabelCounts,
}


def describe_validation_error(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "message"
        parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts)


def json_schemas() -> dict[str, dict[str, Any]]:
    """JSON Schema (draft 2020-12) of every contract, by contract name."""
    out = {}
    for name, model in CONTRACTS.items():
        schema = model.model_json_schema(mode="serialization")
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        schema["$id"] = f"https://tweetpulse.dev/schemas/{name}.v{SCHEMA_VERSION}.json"
        out[name] = schema
    return out


def write_json_schemas(directory: str | Path) -> list[str]:
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    written = []
    for name, schema in json_schemas().items():
        target = path / f"{name}.v{SCHEMA_VERSION}.json"
        target.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n")
        written.append(str(target))
    return written


UNTAGGED = "untagged"
MAX_HASHTAG_TAGS = 5
_HASHTAG = re.compile(r"#(\w{1,64})")


def aggregate_tags(rule_tags: list[str] | tuple[str, ...], text: str) -> list[str]:
    """The one rule for what a tweet is counted and charted under (the worker's aggregates, the
    dashboard): its rule tags, else its first #hashtags (lower-cased, with the #), else 'untagged'."""
    if rule_tags:
        return list(dict.fromkeys(rule_tags))
    # Lower-casing can lengthen a word ("İ"): a tag stays within the contracts' bound.
    hashtags = dict.fromkeys(f"#{tag.lower()}"[:MAX_AGGREGATE_TAG_CHARS] for tag in _HASHTAG.findall(text))
    return list(hashtags)[:MAX_HASHTAG_TAGS] or [UNTAGGED]
