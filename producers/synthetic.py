"""A seeded generator of realistic labeled tweets, for load tests and a demo that needs no data.

Each tweet is built from one to three clauses (templates x topic vocabulary x sentiment words), then
dressed the way real tweets are: leading @mentions, hashtags, emoji, links, elongated words, shouting,
trailing punctuation. The same seed gives the same tweets (ids included); ``created_at`` is the wall
clock so windowed aggregates downstream see a live stream.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from tweetpulse.contracts import MAX_TEXT_CHARS, Label, RawTweet, utcnow


@dataclass(frozen=True)
class Topic:
    things: tuple[str, ...]
    handles: tuple[str, ...]
    hashtags: tuple[str, ...]
    good: tuple[str, ...]  # topic-specific positive happenings
    bad: tuple[str, ...]  # topic-specific negative happenings


TOPICS: dict[str, Topic] = {
    "airlines": Topic(
        ("flight", "crew", "gate agent", "seat", "boarding", "layover", "upgrade", "red-eye", "lounge"),
        ("SkyWayAir", "JetBlueBird", "NorthwindAir", "AeroLite"),
        ("travel", "flying", "avgeek", "delayed", "airport"),
        ("landed 20 minutes early", "got bumped to first class", "the crew remembered my name"),
        ("sat on the tarmac for 3 hours", "lost my bag again", "cancelled with no notice", "no wifi"),
    ),
    "tech": Topic(
        ("phone", "update", "laptop", "battery", "app", "keyboard", "camera", "smartwatch", "router"),
        ("PixelForge", "AcmeSupport", "NimbusCloud", "ByteBox"),
        ("tech", "gadgets", "update", "ios", "android", "devlife"),
        ("battery lasts two days now", "the new update fixed everything", "setup took 5 minutes"),
        ("the update bricked it", "crashes every time I open it", "support closed my ticket", "it overheats"),
    ),
    "sports": Topic(
        ("game", "team", "coach", "defense", "season", "ref", "goal", "playoffs", "lineup"),
        ("CityRovers", "BayHawks", "SportsDeskLive", "UnitedFC"),
        ("gameday", "playoffs", "matchday", "nba", "football"),
        ("what a comeback in the 4th", "clean sheet tonight", "that last-second goal"),
        ("blew a 20 point lead", "the ref was blind tonight", "another injury", "booed off the pitch"),
    ),
    "movies": Topic(
        ("movie", "sequel", "trailer", "soundtrack", "ending", "cast", "finale", "director's cut"),
        ("CineplexNow", "StreamFlix", "FilmBuffDaily", "PopcornTV"),
        ("movies", "cinema", "nowwatching", "bingewatch", "oscars"),
        ("cried at the ending", "the soundtrack is stuck in my head", "every scene was gorgeous"),
        ("walked out halfway", "the plot made no sense", "two hours I won't get back", "ruined the books"),
    ),
    "food": Topic(
        ("burger", "pizza", "latte", "delivery", "brunch", "tacos", "ramen", "dessert", "menu"),
        ("GrubDash", "CafeCorner", "PizzaPlanet", "TacoTown"),
        ("foodie", "brunch", "yum", "coffee", "eats"),
        ("the ramen was perfect", "free dessert on my birthday", "delivery came in 15 min"),
        ("cold fries again", "waited an hour for delivery", "found a hair in my salad", "overpriced"),
    ),
    "gaming": Topic(
        ("patch", "server", "boss fight", "loot", "matchmaking", "controller", "DLC", "frame rate"),
        ("PixelQuestDev", "ArenaOps", "GameHubNews", "LootCrate"),
        ("gaming", "gamer", "twitch", "esports", "patchnotes"),
        ("finally beat the final boss", "60fps on my old rig", "best DLC in years"),
        ("servers down on launch day", "lag is unplayable", "pay to win garbage", "lost my save file"),
    ),
}

WORDS: dict[Label, dict[str, tuple[str, ...]]] = {
    "positive": {
        "adj": (
            "amazing",
            "awesome",
            "great",
            "brilliant",
            "perfect",
            "lovely",
            "fantastic",
            "solid",
            "chill",
        ),
        "verb": ("love", "adore", "can't stop smiling about", "am so happy with", "really enjoyed", "dig"),
        "feel": ("so happy", "thrilled", "grateful", "impressed", "hyped", "in a great mood", "stoked"),
        "emoji": ("😍", "😊", "🙌", "🔥", "❤️", "👏", "😎", "🎉", "✨", "💯"),
        "closer": (
            "thank you!",
            "10/10 would recommend",
            "made my day",
            "best day ever",
            "keep it up",
            "love it",
        ),
        "emoticon": (":)", ":D", "<3", ";)", "=)"),
    },
    "negative": {
        "adj": (
            "terrible",
            "awful",
            "useless",
            "broken",
            "disappointing",
            "horrible",
            "the worst",
            "sad",
            "annoying",
        ),
        "verb": ("hate", "am so done with", "regret buying", "can't stand", "am sick of", "am fed up with"),
        "feel": ("so annoyed", "furious", "gutted", "exhausted", "disappointed", "done", "so over it"),
        "emoji": ("😡", "😤", "😢", "😭", "👎", "🙄", "💔", "😒", "🤬", "😩"),
        "closer": (
            "never again",
            "fix this please",
            "what a joke",
            "worst day ever",
            "I want a refund",
            "ugh",
        ),
        "emoticon": (":(", ":/", "D:", ">:(", ":'("),
    },
}

INTENSIFIERS = ("", "", "", "really ", "so ", "super ", "absolutely ", "honestly ", "lowkey ", "kinda ")
OPENERS = ("", "", "", "", "ok ", "omg ", "wow ", "lol ", "ngl ", "update: ", "so ", "guys ")
WHEN = ("today", "tonight", "this morning", "again", "yesterday", "this week", "right now", "for once")

TEMPLATES = (
    "{opener}the {thing} {when} was {intens}{adj}",
    "I {verb} this {thing}",
    "{opener}{happening} {when}",
    "{happening}. {intens}{adj}",
    "feeling {feel} after the {thing} {when}",
    "just {happening}, {feel}",
    "can we talk about how {intens}{adj} the {thing} is",
    "{opener}{intens}{adj} {thing}, {closer}",
    "my {thing} {when}? {adj}.",
    "{closer}",
    "not gonna lie the {thing} is {intens}{adj}",
    "{opener}day {day} of the {thing} saga: {happening}",
    "who else thinks the {thing} is {adj}",
    "rate the {thing}: {score}/10",
)

DOMAINS = ("t.co", "bit.ly", "instagr.am", "youtu.be", "tinyurl.com")
USERS = (
    "jess_k", "mike88", "the_real_sam", "coffeeaddict", "ana.b", "dev_guy", "liz_travels",
    "nightowl", "chris_p", "momof3", "k8lyn", "bigtom", "rosie_r", "ahmed_dev", "yuki_t",
)  # fmt: skip
ALPHANUM = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


class SyntheticTweets:
    """An endless (or ``count``-long) deterministic iterator of labeled RawTweets.

    ``positive_share`` is the probability of a positive tweet; each tweet picks one of ``topics``
    (names from :data:`TOPICS`) and carries it as its rule tag.
    """

    def __init__(
        self,
        seed: int = 0,
        positive_share: float = 0.5,
        topics: Sequence[str] | None = None,
        count: int | None = None,
    ) -> None:
        if not 0.0 <= positive_share <= 1.0:
            raise ValueError(f"positive_share must lie in [0, 1], got {positive_share}")
        names = list(topics) if topics else sorted(TOPICS)
        unknown = [t for t in names if t not in TOPICS]
        if unknown:
            raise ValueError(f"unknown topics {unknown}: choose from {', '.join(sorted(TOPICS))}")
        self.seed = seed
        self.positive_share = positive_share
        self.topics = names
        self.count = count
        self._rng = random.Random(seed)
        self._n = 0

    def __iter__(self) -> Iterator[RawTweet]:
        return self

    def __next__(self) -> RawTweet:
        if self.count is not None and self._n >= self.count:
            raise StopIteration
        self._n += 1
        rng = self._rng
        label: Label = "positive" if rng.random() < self.positive_share else "negative"
        topic = rng.choice(self.topics)
        return RawTweet(
            id=f"syn-{self.seed}-{self._n}",
            text=compose(rng, label, TOPICS[topic]),
            created_at=utcnow(),
            author_id=str(rng.randrange(10**6, 10**9)),
            lang="en",
            source="synthetic",
            rule_tags=[topic],
            label=label,
        )


def compose(rng: random.Random, label: Label, topic: Topic) -> str:
    """One tweet text: clauses from the templates, then mentions, hashtags, emoji and links."""
    clauses = [_clause(rng, label, topic) for _ in range(rng.choices((1, 2, 3), (5, 3, 1))[0])]
    text = _join(rng, clauses, label)
    if rng.random() < 0.45:
        text = f"@{rng.choice(topic.handles)} {text}"
    if rng.random() < 0.12:
        text = f"@{rng.choice(USERS)} {text}"
    if rng.random() < 0.5:
        text += " " + " ".join(f"#{h}" for h in rng.sample(topic.hashtags, rng.randint(1, 3)))
    if rng.random() < 0.55:
        text += " " + rng.choice(WORDS[label]["emoji"]) * rng.choice((1, 1, 1, 2, 3))
    if rng.random() < 0.15:
        text += " " + _url(rng)
    return text[:MAX_TEXT_CHARS]


def _clause(rng: random.Random, label: Label, topic: Topic) -> str:
    words = WORDS[label]
    text = rng.choice(TEMPLATES).format(
        opener=rng.choice(OPENERS),
        thing=rng.choice(topic.things),
        when=rng.choice(WHEN),
        intens=rng.choice(INTENSIFIERS),
        adj=_elongate(rng, rng.choice(words["adj"])),
        verb=rng.choice(words["verb"]),
        feel=rng.choice(words["feel"]),
        closer=rng.choice(words["closer"]),
        happening=rng.choice(topic.good if label == "positive" else topic.bad),
        day=rng.randint(2, 14),
        score=rng.randint(7, 10) if label == "positive" else rng.randint(0, 3),
    )
    if rng.random() < 0.06:
        return text.upper()
    return text[0].upper() + text[1:] if rng.random() < 0.6 else text


def _join(rng: random.Random, clauses: list[str], label: Label) -> str:
    ends = ("!", "!!", ".", "", "...", "!!!") if label == "positive" else (".", "!", "...", "", "?!", "!!")
    text = " ".join(c if c[-1] in ".?!" else c + rng.choice(ends) for c in clauses)
    if rng.random() < 0.1:
        text += " " + rng.choice(WORDS[label]["emoticon"])
    return text


def _elongate(rng: random.Random, word: str) -> str:
    """Sometimes stretch a vowel, the way people type ("sooo good")."""
    vowels = [i for i, ch in enumerate(word) if ch in "aeiou"]
    if not vowels or rng.random() > 0.08:
        return word
    i = rng.choice(vowels)
    return word[: i + 1] + word[i] * rng.randint(2, 4) + word[i + 1 :]


def _url(rng: random.Random) -> str:
    return f"https://{rng.choice(DOMAINS)}/{''.join(rng.choices(ALPHANUM, k=rng.randint(6, 10)))}"
