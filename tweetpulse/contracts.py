"""Versioned JSON message contracts shared by producers, processors and downstream consumers.

Every message is a JSON object with a ``schema_version``; the Kafka key is the tweet id (UTF-8).
``tweetpulse schemas export DIR`` writes the JSON Schema of each contract.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

SCHEMA_VERSION = 1
MAX_TEXT_CHARS = (
    4_000  # X allows 280 (25k for premium long posts are truncated upstream); anything bigger is abuse.
)

Label = Literal["negative", "positive"]
LABELS: tuple[Label, ...] = ("negative", "positive")
Source = Literal["twitter", "replay", "synthetic"]
TweetId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]


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


def _nonblank(text: str) -> str:
    if not text.strip():
        raise ValueError("text is empty")
    return text


class RawTweet(_Contract):
    """A tweet as it enters the pipeline (topic ``tweets.raw``)."""

    schema_version: Literal[1] = SCHEMA_VERSION
    id: TweetId
    text: str = Field(min_length=1, max_length=MAX_TEXT_CHARS)
    created_at: datetime | None = None
    author_id: str | None = None
    lang: str | None = Field(None, max_length=16)
    source: Source
    rule_tags: list[str] = Field(default_factory=list)
    ingested_at: datetime = Field(default_factory=utcnow)
    label: Label | None = None

    _text_nonblank = field_validator("text")(_nonblank)

    @property
    def key(self) -> bytes:
        return self.id.encode()


class SentimentResult(_Contract):
    """One classification result (topic ``tweets.sentiment``)."""

    schema_version: Literal[1] = SCHEMA_VERSION
    id: TweetId
    text: str
    label: Label
    probabilities: dict[Label, float]
    model_version: str
    rule_tags: list[str] = Field(default_factory=list)
    source: Source | None = None
    true_label: Label | None = None
    ingested_at: datetime
    classified_at: datetime
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
    """A message that could not be processed (topic ``tweets.dlq``); the original bytes are kept."""

    schema_version: Literal[1] = SCHEMA_VERSION
    error: str
    reason: str
    source_topic: str
    source_partition: int
    source_offset: int
    original_key_b64: str | None = None
    original_value_b64: str
    failed_at: datetime = Field(default_factory=utcnow)
    stage: str = "processor"


class ModelAnnouncement(_Contract):
    """A model version made production (compacted topic ``tweetpulse.models``, key ``production``)."""

    schema_version: Literal[1] = SCHEMA_VERSION
    version: str = Field(min_length=1)
    registry_root: str
    announced_at: datetime = Field(default_factory=utcnow)


class LabeledTweet(_Contract):
    """A labeled tweet for retraining (topic ``tweets.labeled``): human feedback or a weak label.

    Weak labels come from an unambiguous emoticon/emoji (``cue``), which is stripped from ``text``.
    """

    schema_version: Literal[1] = SCHEMA_VERSION
    id: TweetId
    text: str = Field(min_length=1, max_length=MAX_TEXT_CHARS)
    label: Label
    source: Literal["human", "weak"]
    labeled_at: datetime = Field(default_factory=utcnow)
    cue: str | None = Field(None, max_length=64)

    _text_nonblank = field_validator("text")(_nonblank)

    @property
    def key(self) -> bytes:
        return self.id.encode()


class DriftEvent(_Contract):
    """The classified stream moved away from its reference (topic ``tweets.drift``)."""

    schema_version: Literal[1] = SCHEMA_VERSION
    window_start: datetime
    window_end: datetime
    count: int = Field(ge=1)
    positive_rate: float = Field(ge=0, le=1)
    mean_confidence: float = Field(ge=0, le=1)
    reference_count: int = Field(ge=1)
    reference_positive_rate: float = Field(ge=0, le=1)
    reference_mean_confidence: float = Field(ge=0, le=1)
    reasons: list[str] = Field(min_length=1)  # which thresholds were crossed, with the numbers
    model_version: str | None = None
    detected_at: datetime = Field(default_factory=utcnow)


CONTRACTS: dict[str, type[_Contract]] = {
    "raw-tweet": RawTweet,
    "sentiment-result": SentimentResult,
    "dead-letter": DeadLetter,
    "model-announcement": ModelAnnouncement,
    "labeled-tweet": LabeledTweet,
    "drift-event": DriftEvent,
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
