"""A deterministic generator of labelled English news headlines and sentences, for the demo's two classifiers.

Every example is assembled from parts: a sentence frame ("Breaking: {subject} {event}"), a subject of a topic ("the
striker"), an event of that topic with a polarity ("won the championship in overtime"), optional places, days and
sources, and short reactions ("This is great news!"). `topic_dataset` labels texts with their topic,
`sentiment_dataset` with their polarity (plain news events are neutral).

The held-out split measures generalisation, not memory: every pool of parts is cut in two (every fourth item is
held out), training texts are built only from the training parts and held-out texts only from the held-out parts,
so no held-out text shares its frame, its subject or its event with any training text.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

Split = Literal["train", "heldout"]
Polarity = Literal["negative", "neutral", "positive"]

TOPIC_LABELS: tuple[str, ...] = ("business", "entertainment", "health", "politics", "sports", "technology")
POLARITIES: tuple[Polarity, ...] = ("negative", "neutral", "positive")
SENTIMENT_LABELS: tuple[str, ...] = POLARITIES


@dataclass(frozen=True)
class Example:
    """One labelled text."""

    text: str
    label: str


@dataclass(frozen=True)
class Dataset:
    """Training and held-out examples of one task, balanced over `labels` (in id order)."""

    labels: tuple[str, ...]
    train: list[Example]
    heldout: list[Example]


@dataclass(frozen=True)
class TopicParts:
    """The vocabulary of one topic: who the news is about, what happened (by polarity), what it is about."""

    subjects: tuple[str, ...]
    events: dict[Polarity, tuple[str, ...]]
    phrases: tuple[str, ...]
    """Noun phrases for "Breaking news about …" headlines (neutral)."""


TOPICS: dict[str, TopicParts] = {
    "business": TopicParts(
        subjects=(
            "Acme Corp",
            "Northwind Traders",
            "the central bank",
            "shares of Globex",
            "the retail giant",
            "a major automaker",
            "the national airline",
            "Initech",
            "the oil producer",
            "the steelmaker",
            "a leading investment bank",
            "the supermarket chain",
            "the insurer",
            "Contoso",
            "the brewery",
            "the shipping group",
        ),
        events={
            "positive": (
                "posted record quarterly profits",
                "saw its shares rally after a strong quarter",
                "beat analysts' earnings forecasts",
                "reported a sharp rise in sales",
                "raised its full-year profit outlook",
                "won a lucrative supply contract",
                "hit an all-time high on the stock market",
                "announced a generous dividend increase",
                "reported booming exports and soaring revenue",
                "doubled its profit margin",
            ),
            "neutral": (
                "will publish its annual report on Thursday",
                "named a new chief financial officer",
                "held its annual shareholder meeting",
                "kept interest rates unchanged",
                "moved its headquarters to a new office",
                "released its quarterly earnings statement",
                "opened a new branch downtown",
                "confirmed the date of its investor day",
                "updated its accounting policy",
                "published its monthly trade figures",
            ),
            "negative": (
                "cut thousands of jobs amid falling sales",
                "saw its shares slump after a profit warning",
                "filed for bankruptcy protection",
                "reported a heavy quarterly loss",
                "was fined for misleading investors",
                "lost a major contract to a rival",
                "warned of weak demand and falling revenue",
                "closed dozens of stores",
                "defaulted on its debt",
                "saw its stock crash to a record low",
            ),
        },
        phrases=(
            "the stock market",
            "interest rates",
            "the housing market",
            "corporate earnings",
            "inflation",
            "the oil price",
            "the job market",
            "retail sales",
            "global trade",
            "the economy",
        ),
    ),
    "entertainment": TopicParts(
        subjects=(
            "the pop star",
            "a Hollywood studio",
            "the award-winning director",
            "the hit streaming series",
            "the rock band",
            "the actress",
            "the film festival",
            "the late-night comedian",
            "the blockbuster sequel",
            "the country singer",
            "the theatre company",
            "the reality show",
            "the chart-topping rapper",
            "the animated film",
            "the boy band",
            "the talk show host",
        ),
        events={
            "positive": (
                "won best picture at the awards ceremony",
                "topped the box office on its opening weekend",
                "drew rave reviews from critics",
                "sold out a world tour in minutes",
                "broke streaming records with its new season",
                "received a standing ovation at the premiere",
                "earned five award nominations",
                "released a critically acclaimed album",
                "thrilled fans with a surprise concert",
                "became the most watched show of the year",
            ),
            "neutral": (
                "announced the release date of a new album",
                "will appear at the film festival next month",
                "began filming a new movie",
                "signed with a new talent agency",
                "released the trailer for the upcoming film",
                "scheduled a concert tour for the autumn",
                "gave an interview about the new series",
                "confirmed the cast of the sequel",
                "attended the premiere of the musical",
                "will host the music awards this year",
            ),
            "negative": (
                "was booed off stage at the concert",
                "flopped at the box office",
                "cancelled the rest of the tour",
                "was panned by critics as boring and clumsy",
                "lost a bitter copyright lawsuit",
                "was dropped by the record label",
                "faced a backlash over offensive jokes",
                "saw the show cancelled after poor ratings",
                "postponed the album after a studio fire",
                "was mocked for a disastrous performance",
            ),
        },
        phrases=(
            "the film awards",
            "the new streaming series",
            "the music charts",
            "the summer blockbusters",
            "celebrity weddings",
            "the comedy festival",
            "the pop world",
            "the theatre season",
            "the box office",
            "the new album",
        ),
    ),
    "health": TopicParts(
        subjects=(
            "the health ministry",
            "doctors at the city hospital",
            "a new vaccine",
            "researchers at the medical school",
            "the drug maker",
            "the national health service",
            "a cancer clinic",
            "nurses at the clinic",
            "the world health body",
            "a new flu treatment",
            "the children's hospital",
            "scientists studying diabetes",
            "the mental health charity",
            "the blood bank",
            "the dental association",
            "a heart surgeon",
        ),
        events={
            "positive": (
                "cut hospital admissions by half in a clinical trial",
                "reported a steep fall in infection rates",
                "helped thousands of patients recover faster",
                "was approved after highly successful trials",
                "brought surgery waiting times down sharply",
                "found a cure for a rare childhood disease",
                "saved hundreds of lives during the outbreak",
                "showed the therapy doubled cancer survival rates",
                "eliminated measles in the region",
                "reported the lowest rate of heart attacks on record",
            ),
            "neutral": (
                "published new guidance on vitamin intake",
                "will review the dietary guidelines next year",
                "began a study of sleep and heart health",
                "updated its advice on seasonal flu shots",
                "released figures on hospital bed capacity",
                "launched a survey of patients' diets",
                "held a conference on public health policy",
                "recommended annual blood pressure checks",
                "opened registration for the clinical trial",
                "issued its yearly report on medicine prices",
            ),
            "negative": (
                "warned of a deadly outbreak spreading fast",
                "reported a surge in hospital deaths",
                "recalled a contaminated medicine",
                "faced a severe shortage of nurses and beds",
                "confirmed the virus had killed dozens",
                "saw cancer waiting lists grow to record lengths",
                "admitted serious failures in patient care",
                "reported rising obesity and heart disease",
                "was overwhelmed by flu cases",
                "found the drug caused dangerous side effects",
            ),
        },
        phrases=(
            "the flu season",
            "vaccines",
            "hospital waiting times",
            "mental health care",
            "heart disease",
            "the new cancer drug",
            "healthy eating",
            "the measles outbreak",
            "sleep and health",
            "childhood obesity",
        ),
    ),
    "politics": TopicParts(
        subjects=(
            "the prime minister",
            "parliament",
            "the opposition leader",
            "the senate",
            "the governing coalition",
            "the president",
            "the foreign minister",
            "the mayor",
            "the city council",
            "the election commission",
            "lawmakers",
            "the ruling party",
            "the interior minister",
            "the governor",
            "the chancellor",
            "the opposition party",
        ),
        events={
            "positive": (
                "won a landslide victory in the election",
                "passed a widely praised reform bill",
                "secured a historic peace agreement",
                "celebrated a resounding win in parliament",
                "brokered a successful ceasefire between rival factions",
                "won broad support for the new constitution",
                "signed a landmark trade treaty with neighbours",
                "was re-elected with a record majority",
                "united rival parties behind the budget",
                "ended the long political deadlock",
            ),
            "neutral": (
                "will vote on the budget on Tuesday",
                "held talks with foreign diplomats",
                "announced the date of the next election",
                "met party leaders to discuss the agenda",
                "published the draft of the new bill",
                "appointed a new cabinet secretary",
                "scheduled a debate on immigration policy",
                "began the summer session of parliament",
                "visited the capital for a state meeting",
                "sent the electoral reform proposal to committee",
            ),
            "negative": (
                "resigned amid a corruption scandal",
                "lost a vote of no confidence",
                "was accused of rigging the election",
                "faced mass protests over the tax hike",
                "saw the coalition collapse after bitter infighting",
                "was impeached for abuse of power",
                "suffered a humiliating defeat at the polls",
                "was condemned for jailing journalists",
                "failed to pass the budget, forcing a government shutdown",
                "was hit by a damaging bribery scandal",
            ),
        },
        phrases=(
            "the general election",
            "the budget vote",
            "the new cabinet",
            "the coalition talks",
            "immigration policy",
            "the presidential race",
            "the parliament debate",
            "the peace talks",
            "tax reform",
            "the referendum",
        ),
    ),
    "sports": TopicParts(
        subjects=(
            "the home team",
            "the striker",
            "the national football team",
            "the tennis champion",
            "the basketball club",
            "the Olympic sprinter",
            "the cricket side",
            "the cycling team",
            "the league leaders",
            "the goalkeeper",
            "the rugby squad",
            "the marathon runner",
            "the boxing champion",
            "the hockey team",
            "the golfer",
            "the swimming team",
        ),
        events={
            "positive": (
                "won the championship in overtime",
                "scored a hat-trick in a thrilling victory",
                "clinched the title with a stunning comeback",
                "broke the world record in the final",
                "won the gold medal at the Olympics",
                "beat their rivals with a brilliant performance",
                "celebrated a historic cup triumph",
                "stayed unbeaten for the whole season",
                "lifted the trophy after a superb final",
                "qualified for the World Cup in style",
            ),
            "neutral": (
                "will play the semi-final on Saturday",
                "announced the squad for the tournament",
                "trained at the stadium ahead of the match",
                "signed a new contract with the club",
                "named a new head coach",
                "travelled to the away game by train",
                "released the fixture list for next season",
                "held a press conference before the race",
                "will face the defending champions next week",
                "moved the match to a later kick-off",
            ),
            "negative": (
                "suffered a humiliating defeat at home",
                "was relegated after a dismal season",
                "lost the final after a late collapse",
                "was banned for two years for doping",
                "was knocked out in the first round",
                "suffered a serious knee injury",
                "was fined after fans rioted",
                "had the game called off because of a waterlogged pitch",
                "crashed out of the tournament",
                "lost a fifth straight match",
            ),
        },
        phrases=(
            "the World Cup",
            "the transfer market",
            "the Olympic games",
            "the tennis final",
            "the league title race",
            "the marathon",
            "the cricket series",
            "the cup final",
            "the boxing match",
            "the grand prix",
        ),
    ),
    "technology": TopicParts(
        subjects=(
            "the software company",
            "a chipmaker",
            "the smartphone maker",
            "the social network",
            "the startup",
            "researchers at the AI lab",
            "the search engine",
            "the cloud provider",
            "the electric car maker",
            "the video game studio",
            "the robotics firm",
            "the telecom operator",
            "the internet giant",
            "the cybersecurity firm",
            "the laptop maker",
            "the app developer",
        ),
        events={
            "positive": (
                "unveiled a faster and cheaper processor",
                "launched an impressive new smartphone",
                "released a breakthrough artificial intelligence model",
                "delivered a flawless software update",
                "set a record for quantum computing speed",
                "won praise for its brilliant new app",
                "built a battery that charges in minutes",
                "rolled out lightning-fast broadband to rural towns",
                "made its chatbot far more accurate",
                "shipped a game that delighted players",
            ),
            "neutral": (
                "released a software update for its app",
                "will hold its developer conference in June",
                "published the specifications of its new chip",
                "moved its data centre to a new region",
                "announced a change to its privacy settings",
                "updated the operating system of its devices",
                "opened a research office for machine learning",
                "showed a prototype robot at a trade fair",
                "changed the name of its cloud service",
                "published the source code of its compiler",
            ),
            "negative": (
                "suffered a massive data breach",
                "recalled phones after batteries caught fire",
                "was hit by a crippling cyberattack",
                "saw its app crash for millions of users",
                "was fined for illegally collecting user data",
                "delayed its flagship chip after serious defects",
                "laid off thousands of engineers",
                "was hacked, exposing customer passwords",
                "saw its servers go down for two days",
                "pulled a buggy update that broke devices",
            ),
        },
        phrases=(
            "artificial intelligence",
            "AI chips",
            "the new smartphone",
            "cybersecurity",
            "quantum computing",
            "electric cars",
            "social media apps",
            "cloud computing",
            "robotics",
            "machine learning",
        ),
    ),
}

#: Sentence frames of a news statement: {subject} and {event} always, {source}, {day}, {place} where they appear.
NEWS_FRAMES = (
    "{subject} {event}.",
    "{subject} {event}, {source} said on {day}.",
    "Breaking: {subject} {event}",
    "Report: {subject} {event}",
    "{day}: {subject} {event} {place}.",
    "{subject} {event} {place}, according to {source}.",
    "Analysts say {subject} {event}.",
    "Update - {subject} {event}",
    "{subject} {event} earlier this week.",
    "Officials confirmed that {subject} {event}.",
    "Sources: {subject} {event} {place}",
    "Latest: {subject} {event}.",
    "{place}, {day}: {subject} {event}.",
    "It emerged on {day} that {subject} {event}.",
    "{subject} {event}, {source} reported.",
    "According to {source}, {subject} {event}.",
)

#: Headlines about a topic rather than an event: neutral.
PHRASE_FRAMES = (
    "Breaking news about {phrase}",
    "Latest news on {phrase}",
    "{phrase}: what you need to know",
    "Everything we know about {phrase} so far",
    "A closer look at {phrase}",
    "Live updates on {phrase}",
    "Explainer: {phrase}",
    "Your questions about {phrase}, answered",
    "Today's headlines on {phrase}",
    "What comes next for {phrase}",
    "Five things to know about {phrase}",
    "The week in {phrase}",
)

#: Reactions, standalone or after a news sentence: they carry the sentiment.
REACTION_FRAMES: dict[Polarity, tuple[str, ...]] = {
    "positive": (
        "This is {adj} news!",
        "What {a_adj} {noun}!",
        "{adj} news for {group}.",
        "I am so {feeling} about this.",
        "{group} will be {feeling}.",
        "Truly {adj}.",
        "A {adj} {noun} for {group}!",
        "We are {feeling} with this {noun}.",
        "Such {adj} news today.",
        "Honestly, this is {adj}.",
        "The {noun} left {group} {feeling}.",
        "Really {adj} work by everyone.",
    ),
    "negative": (
        "This is {adj} news!",
        "What {a_adj} {noun}!",
        "{adj} news for {group}.",
        "I am so {feeling} about this.",
        "{group} will be {feeling}.",
        "Truly {adj}.",
        "A {adj} {noun} for {group}.",
        "We are {feeling} with this {noun}.",
        "Such {adj} news today.",
        "Honestly, this is {adj}.",
        "The {noun} left {group} {feeling}.",
        "Really {adj} work by everyone.",
    ),
    "neutral": (
        "More details are expected later.",
        "Here is what we know so far.",
        "The full statement is available online.",
        "Further updates will follow.",
        "The report runs to forty pages.",
        "A decision is expected next month.",
        "Officials did not give further details.",
        "The announcement was made in a short statement.",
        "Reporters were briefed on {day}.",
        "The figures cover the last quarter.",
        "The meeting is scheduled for {day}.",
        "A spokesperson confirmed the timetable.",
    ),
}

ADJECTIVES: dict[Polarity, tuple[str, ...]] = {
    "positive": (
        "great",
        "wonderful",
        "fantastic",
        "excellent",
        "brilliant",
        "amazing",
        "superb",
        "terrific",
        "marvellous",
        "delightful",
        "encouraging",
        "outstanding",
    ),
    "negative": (
        "terrible",
        "awful",
        "dreadful",
        "horrible",
        "disappointing",
        "depressing",
        "worrying",
        "alarming",
        "shocking",
        "tragic",
        "appalling",
        "grim",
    ),
}
FEELINGS: dict[Polarity, tuple[str, ...]] = {
    "positive": ("thrilled", "delighted", "happy", "excited", "pleased", "overjoyed", "proud", "relieved"),
    "negative": ("worried", "upset", "angry", "disappointed", "furious", "saddened", "devastated", "frustrated"),
}
NOUNS = ("result", "outcome", "decision", "development", "day", "moment", "announcement", "turn of events")
GROUPS = ("everyone", "the fans", "investors", "patients", "voters", "families", "the industry", "the whole city")
SOURCES = (
    "officials",
    "a spokesperson",
    "analysts",
    "local media",
    "a statement",
    "reporters",
    "insiders",
    "news agencies",
)
DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday", "this morning")
PLACES = (
    "in London",
    "in New York",
    "in Tokyo",
    "in Berlin",
    "in Paris",
    "in Sydney",
    "in Toronto",
    "in Madrid",
    "in Mumbai",
    "in Nairobi",
    "across Europe",
    "nationwide",
)

#: What the demo asks, with the expected topic and sentiment: never generated into any split, so that the demo's
#: answers are not recalled from training. "This is great news!" has no topic.
SHOWCASE: tuple[tuple[str, str | None, str], ...] = (
    ("Breaking news about AI technology", "technology", "neutral"),
    ("This is great news!", None, "positive"),
    ("Shares rallied after a strong quarter.", "business", "positive"),
    ("The match was cancelled because of heavy rain.", "sports", "negative"),
    ("Parliament will vote on the new budget next week.", "politics", "neutral"),
    ("The new vaccine cut hospital admissions by half.", "health", "positive"),
    ("The film flopped at the box office and critics hated it.", "entertainment", "negative"),
)

HELDOUT_EVERY = 4
"""Every `HELDOUT_EVERY`-th item of each pool of parts (index 3, 7, 11, …) is used only by the held-out split."""


MAX_REPEATS = 2000
"""Draws in a row that give no new text before a split is considered exhausted."""


def split_pool(items: Sequence[str], split: Split) -> tuple[str, ...]:
    """The part of `items` that `split` may use."""
    held = tuple(item for i, item in enumerate(items) if i % HELDOUT_EVERY == HELDOUT_EVERY - 1)
    return held if split == "heldout" else tuple(item for item in items if item not in held)


class _Composer:
    """Builds texts of one split from that split's parts only, with its own random stream."""

    def __init__(self, split: Split, seed: int) -> None:
        self.split = split
        self.rng = random.Random(f"{seed}:{split}")  # a string seed: stable across Python runs and versions

    def pick(self, items: Sequence[str]) -> str:
        return self.rng.choice(split_pool(items, self.split))

    def news(self, topic: str, polarity: Polarity) -> str:
        parts = TOPICS[topic]
        text = self.pick(NEWS_FRAMES).format(
            subject=self.pick(parts.subjects),
            event=self.pick(parts.events[polarity]),
            source=self.pick(SOURCES),
            day=self.pick(DAYS),
            place=self.pick(PLACES),
        )
        return _capitalize(text)

    def phrase(self, topic: str) -> str:
        return _capitalize(self.pick(PHRASE_FRAMES).format(phrase=self.pick(TOPICS[topic].phrases)))

    def reaction(self, polarity: Polarity) -> str:
        if polarity == "neutral":
            return self.pick(REACTION_FRAMES["neutral"]).format(day=self.pick(DAYS))
        adjective = self.pick(ADJECTIVES[polarity])
        article = "an" if adjective[0] in "aeiou" else "a"
        text = self.pick(REACTION_FRAMES[polarity]).format(
            adj=adjective,
            a_adj=f"{article} {adjective}",
            noun=self.pick(NOUNS),
            group=self.pick(GROUPS),
            feeling=self.pick(FEELINGS[polarity]),
        )
        return _capitalize(text)

    def topic_example(self, topic: str) -> str:
        roll = self.rng.random()
        polarity = self.rng.choice(POLARITIES)
        if roll < 0.2:
            return self.phrase(topic)
        if roll < 0.85:
            return self.news(topic, polarity)
        return f"{_sentence(self.news(topic, polarity))} {self.reaction(polarity)}"

    def sentiment_example(self, polarity: Polarity) -> str:
        roll = self.rng.random()
        topic = self.rng.choice(TOPIC_LABELS)
        if polarity == "neutral":
            if roll < 0.45:
                return self.news(topic, "neutral")
            if roll < 0.65:
                return self.phrase(topic)
            if roll < 0.8:
                return self.reaction("neutral")
            return f"{_sentence(self.news(topic, 'neutral'))} {self.reaction('neutral')}"
        if roll < 0.5:
            return self.news(topic, polarity)
        if roll < 0.75:
            return self.reaction(polarity)
        # A plain or matching event followed by a reaction: the reaction decides the label.
        event_polarity: Polarity = "neutral" if self.rng.random() < 0.5 else polarity
        return f"{_sentence(self.news(topic, event_polarity))} {self.reaction(polarity)}"


def _capitalize(text: str) -> str:
    return text[:1].upper() + text[1:]


def _sentence(text: str) -> str:
    """`text` ending with punctuation, so that another sentence can follow it (headline frames have none)."""
    return text if text[-1] in ".!?" else f"{text}."


def _balanced(
    labels: Sequence[str],
    per_label: int,
    make: Callable[[str], str],
    rng: random.Random,
    exclude: frozenset[str] = frozenset(),
) -> list[Example]:
    """`per_label` distinct texts per label (none in `exclude`), shuffled."""
    examples: list[Example] = []
    for label in labels:
        seen: set[str] = set()
        misses = 0
        while len(seen) < per_label and misses < MAX_REPEATS:
            text = make(label)
            if text in exclude or text in seen:
                misses += 1
                continue
            misses = 0
            seen.add(text)
            examples.append(Example(text, label))
        if len(seen) < per_label:
            raise ValueError(f"only {len(seen)} distinct texts for label {label!r}; ask for fewer than {per_label}")
    rng.shuffle(examples)
    return examples


def _dataset(
    labels: tuple[str, ...],
    train_per_label: int,
    heldout_per_label: int,
    seed: int,
    make: Callable[[_Composer, str], str],
) -> Dataset:
    train_composer, heldout_composer = _Composer("train", seed), _Composer("heldout", seed)
    showcase = frozenset(text for text, _, _ in SHOWCASE)
    train = _balanced(
        labels, train_per_label, lambda label: make(train_composer, label), train_composer.rng, exclude=showcase
    )
    # Disjoint by construction (different parts); excluding the training texts makes it certain.
    heldout = _balanced(
        labels,
        heldout_per_label,
        lambda label: make(heldout_composer, label),
        heldout_composer.rng,
        exclude=showcase | {e.text for e in train},
    )
    return Dataset(labels, train, heldout)


def topic_dataset(train_per_label: int = 500, heldout_per_label: int = 100, seed: int = 13) -> Dataset:
    """News headlines and sentences labelled with one of `TOPIC_LABELS`."""
    return _dataset(
        TOPIC_LABELS, train_per_label, heldout_per_label, seed, lambda composer, label: composer.topic_example(label)
    )


def sentiment_dataset(train_per_label: int = 800, heldout_per_label: int = 150, seed: int = 13) -> Dataset:
    """News sentences and reactions labelled with one of `SENTIMENT_LABELS` (plain news is neutral)."""
    return _dataset(
        SENTIMENT_LABELS,
        train_per_label,
        heldout_per_label,
        seed,
        lambda composer, label: composer.sentiment_example(label),  # type: ignore[arg-type]
    )


#: The datasets by registered model name.
DATASETS: dict[str, Callable[..., Dataset]] = {
    "topic-classification": topic_dataset,
    "sentiment-analysis": sentiment_dataset,
}


# --- long articles ----------------------------------------------------------------------------------------------------
# Article-length texts for the long-text strategies (`long_text=truncate|chunk`): several paragraphs whose opening is
# boilerplate (dateline, byline, cookie and subscription banners, share links) or a lede about another subject, with
# the labelled body after it. The body is built from the same split's parts as the headlines, so a held-out article
# shares no frame, subject or event with any training text.

#: Page furniture that scraped articles open with: no topic, no sentiment. `{day}`, `{place}` and `{source}` vary.
BOILERPLATE = (
    "{place_upper} ({source_title}) -",
    "By a staff reporter. Published {day}, updated 2 hours ago.",
    "We use cookies to improve your experience on our site and to show you relevant advertising. By continuing to "
    "browse you agree to our use of cookies; manage your preferences in the privacy settings at any time.",
    "Subscribe now for unlimited access to all our journalism, the daily newsletter and the print edition. Already "
    "a subscriber? Sign in to continue reading.",
    "Share this article: email, copy link, print. Follow us for the latest updates and alerts.",
    "Advertisement. Continue reading the main story below.",
    "This page is best viewed with JavaScript enabled. Some features may not work in your browser.",
    "Listen to this article: audio version, 4 minutes. Text size: small, medium, large.",
    "Sign up for our free morning briefing and get the top stories delivered to your inbox every day.",
    "Photo: file image, used with permission. All rights reserved. Reproduction without consent is prohibited.",
    "Related: most read, most shared, editor's picks. Comments are closed for this article.",
)

#: How an article's opening is made: page furniture only, or furniture and then a lede about another topic.
ArticleOpening = Literal["boilerplate", "other_lede"]


@dataclass(frozen=True)
class Article:
    """One long labelled text: `opening` (no label of its own) followed by the labelled body."""

    text: str
    topic: str
    polarity: Polarity
    opening: ArticleOpening
    body_start: int
    """Index in `text` where the labelled body begins."""


def _boilerplate(composer: _Composer, words: int) -> str:
    """Page furniture of at least `words` words: a dateline, then banners in a random order, none repeated."""
    place = composer.pick(PLACES).removeprefix("in ").upper()
    source = composer.pick(("Reuters", "AP", "AFP", "Staff", "Wire"))
    parts = [BOILERPLATE[0].format(place_upper=place, source_title=source)]
    rest = list(BOILERPLATE[1:])
    composer.rng.shuffle(rest)
    for part in rest:
        if sum(len(p.split()) for p in parts) >= words:
            break
        parts.append(part.format(day=composer.pick(DAYS)))
    return " ".join(parts)


def _body(composer: _Composer, topic: str, polarity: Polarity, sentences: int) -> str:
    """`sentences` sentences about `topic` with `polarity`, in paragraphs of two or three, reactions among them."""
    lines: list[str] = []
    for index in range(sentences):
        if polarity != "neutral" and index % 3 == 2:
            lines.append(composer.reaction(polarity))
        else:
            lines.append(_sentence(composer.news(topic, polarity)))
    paragraphs = [" ".join(lines[i : i + 3]) for i in range(0, len(lines), 3)]
    return "\n\n".join(paragraphs)


def long_articles(
    per_label: int = 20,
    task: Literal["topic", "sentiment"] = "topic",
    split: Split = "heldout",
    seed: int = 13,
    opening_words: int = 90,
    body_sentences: int = 9,
) -> list[Article]:
    """`per_label` articles per label of `task` (topics or polarities), half opening with boilerplate of at least
    `opening_words` words (more than a 64- or 128-token window holds), half with boilerplate and then a lede of two
    sentences about another topic; then `body_sentences` sentences of the labelled topic and polarity. Deterministic
    for a seed; `split` picks the parts as the headline datasets do (held-out parts for "heldout")."""
    composer = _Composer(split, seed + 1)  # its own stream: the headline datasets stay as they are
    labels = TOPIC_LABELS if task == "topic" else SENTIMENT_LABELS
    articles: list[Article] = []
    for label in labels:
        for index in range(per_label):
            topic = label if task == "topic" else composer.rng.choice(TOPIC_LABELS)
            polarity: Polarity = label if task == "sentiment" else composer.rng.choice(POLARITIES)  # type: ignore[assignment]
            opening: ArticleOpening = "boilerplate" if index % 2 == 0 else "other_lede"
            head = _boilerplate(composer, opening_words)
            if opening == "other_lede":
                other = composer.rng.choice([t for t in TOPIC_LABELS if t != topic])
                mood = composer.rng.choice([p for p in POLARITIES if p != polarity])
                head += "\n\n" + " ".join(_sentence(composer.news(other, mood)) for _ in range(2))
            body = _body(composer, topic, polarity, body_sentences)
            text = f"{head}\n\n{body}"
            articles.append(Article(text, topic, polarity, opening, len(text) - len(body)))
    composer.rng.shuffle(articles)
    return articles
