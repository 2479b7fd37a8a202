"""Support-ticket triage: FAQ knowledge bases, suggested answers and urgency scores.

Pure functions, frames in and frames out (no file I/O, clock or environment):

* ``faq_entries(content, name)`` parses a user's knowledge base (Markdown or CSV text) into
  ``faq_id, question, answer``.
* ``suggested_answers(tickets, faq)`` retrieves the best FAQ entry per ticket by TF-IDF cosine
  similarity (word 1-2-grams, sublinear tf, English stop words, light suffix folding, IDF fitted
  on the FAQ's question + answer texts; an entry is the mean of its question and answer vectors).
* ``urgency_scores(tickets, history)`` combines the sentiment model's negativity with rules
  (urgent wording, repeated contact, order/payment problems, high-value customers) into an
  urgency in [0, 1] with human-readable reasons.

Urgency is a weighted sum of components that are each in [0, 1], with weights that add up to 1::

    urgency = 0.35 urgent_wording + 0.25 negativity + 0.20 repeat
              + 0.10 order_payment + 0.10 high_value

``urgent_wording`` (0/1) is an explicit escalation in the ticket's title or text ("urgent",
"still waiting", "third time", "charged twice", "unacceptable", "chargeback", ...), the
strongest sign that a reply cannot wait; ``negativity`` is the sentiment model's score (null: 0,
an unknown tone adds nothing); ``repeat`` is ``(n - 1) / 2`` capped at 1 for the n-th contact by
the same user within ``repeat_window_days`` (the third contact gets the full weight; contacts are
the distinct (user, created_at) pairs of ``history`` and the tickets, and one exactly
``repeat_window_days`` earlier still counts);
``order_payment`` (0/1) means money or goods are at stake, which most tickets are, so it mainly
orders tickets within a tier; ``high_value`` (0/1) marks customers the shop cannot afford to
lose. A ticket with urgent wording and a money problem (0.45) thus ranks above a calm third
contact about an order (0.30), and an angry third contact (0.30 + 0.25 x negativity) can
outrank both.
"""

from __future__ import annotations

import csv
import hashlib
import html
import io
import itertools
import re
import unicodedata
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import PurePath

import numpy as np
import polars as pl
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS, TfidfVectorizer
from sklearn.preprocessing import normalize

# --- urgency weights and rules ------------------------------------------------------------------

URGENT_WORDING_WEIGHT = 0.35
NEGATIVITY_WEIGHT = 0.25
REPEAT_WEIGHT = 0.20
ORDER_PAYMENT_WEIGHT = 0.10
HIGH_VALUE_WEIGHT = 0.10
#: The n-th contact in the window at which the repeat component reaches 1 (2nd contact: 0.5).
REPEAT_SATURATION = 3
#: Negativity from which "negative tone" is listed as a reason (the score counts below it too).
NEGATIVE_TONE_AT = 0.6

#: Escalation wording, matched case-insensitively on whole words in the title and text.
URGENT_PATTERNS = (
    r"urgent(?:ly)?",
    r"asap",
    r"as soon as possible",
    r"immediately",
    r"emergency",
    r"right away",
    r"time[- ]sensitive",
    r"still (?:waiting|no (?:reply|response|answer|word|news|update))",
    r"(?:been|kept|keep) waiting",
    r"no (?:reply|response|answer)",
    r"(?:nobody|no one|no-one) (?:has |have )?(?:replied|responded|answered|got back|gotten back)",
    r"(?:not|never|haven't|have not|hasn't|has not|didn't|did not) (?:heard|had) "
    r"(?:back|a reply|a response|anything back)",
    r"(?:second|third|fourth|fifth|sixth|\d+(?:st|nd|rd|th)) time",
    r"(?:contacted|emailed|called|phoned|messaged|written to|wrote to|asked) you (?:\w+ )?"
    r"(?:several|many|multiple|countless|two|three|four|five|\d+) times",
    r"(?:charged|billed|debited)(?: me| us)? (?:twice|two times|2 times|three times|double)",
    r"double[- ]?(?:charged|billed|charge|payment)",
    r"unacceptable",
    r"ridiculous",
    r"outrageous",
    r"disgraceful",
    r"appalling",
    r"furious",
    r"fed up",
    r"sick (?:and tired )?of",
    r"escalate",
    r"(?:speak|talk) to (?:a |your )?(?:manager|supervisor)",
    r"chargeback",
    r"(?:contact|call|tell|ask) my bank",
    r"dispute (?:the |this )?(?:charge|payment|transaction)",
    r"trading standards",
    r"small claims",
    r"lawyer",
    r"solicitor",
    r"legal action",
    r"ombudsman",
    r"formal complaint",
)
#: Words that mean money or goods are at stake: orders, payments, refunds, deliveries.
ORDER_PAYMENT_PATTERNS = (
    r"orders?",
    r"ordered",
    r"refund(?:s|ed)?",
    r"returns?",
    r"returned",
    r"charges?",
    r"charged",
    r"payments?",
    r"paid",
    r"pay",
    r"billed",
    r"invoice",
    r"(?:credit |debit |gift )?card",
    r"debited",
    r"transaction",
    r"statement",
    r"money",
    r"checkout",
    r"purchase[sd]?",
    r"deliver(?:y|ed|ies)?",
    r"parcels?",
    r"packages?",
    r"tracking",
    r"courier",
    r"shipping",
    r"shipped",
    r"shipment",
    r"dispatch(?:ed)?",
    r"in transit",
    r"arrived",
    r"never came",
)
# Rust-regex syntax (Polars): no look-around, so "!!" gets its own branch without \b.
_URGENT_RE = r"(?i)(?:\b(?:" + "|".join(URGENT_PATTERNS) + r")\b|!{2,})"
_ORDER_PAYMENT_RE = r"(?i)\b(?:" + "|".join(ORDER_PAYMENT_PATTERNS) + r")\b"

# --- knowledge base -----------------------------------------------------------------------------

_MARKDOWN_SUFFIXES = (".md", ".markdown")
_CSV_DELIMITERS = {".csv": ",", ".tsv": "\t"}
_QUESTION_LEVELS = 3  # '#' to '###' are questions; deeper headings stay in the answer text
_QA_LEVEL = 7  # a "Q:" marker nests below any heading, so '## Delivery' + Q/A pairs is a section
_SLUG_MAX = 80

_HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)(?:\s+#+)?\s*$")
_Q_MARK = re.compile(r"^\s*[*_]{0,2}\s*(?:Q|Question)\s*:\s*[*_]{0,2}\s*(.*)$", re.I)
_A_MARK = re.compile(r"^\s*[*_]{0,2}\s*(?:A|Answer)\s*:\s*[*_]{0,2}\s*(.*)$", re.I)
_FENCE = re.compile(r"^\s*(```|~~~)")
_RULE = re.compile(r"^\s*([-*_])(?:\s*\1){2,}\s*$")
_LIST_ITEM = re.compile(r"^(?:[-*+]|\d+[.)])\s+")


@dataclass
class _Entry:
    level: int
    question: str
    line: int
    awaiting_answer: bool = False
    answer: list[str] = field(default_factory=list)


def faq_entries(content: str, name: str) -> pl.DataFrame:
    """The knowledge base's entries: a stable unique ``faq_id`` slug, ``question``, ``answer``."""
    suffix = PurePath(name).suffix.lower()
    if suffix in _MARKDOWN_SUFFIXES:
        pairs = _markdown_pairs(content, name)
    elif suffix in _CSV_DELIMITERS:
        pairs = _csv_pairs(content, name, _CSV_DELIMITERS[suffix])
    else:
        raise ValueError(
            f"{name}: unsupported knowledge-base format {suffix or '(no suffix)'!r} "
            "(expected a .md, .markdown or .csv file)"
        )
    seen: dict[str, int] = {}
    for question, line in ((q, ln) for q, _, ln in pairs):
        key = " ".join(question.lower().split())
        if key in seen:
            raise ValueError(
                f"{name}: line {line}: duplicate question {question!r} (first at line {seen[key]})"
            )
        seen[key] = line
    return pl.DataFrame(
        {
            "faq_id": _unique_slugs([q for q, _, _ in pairs]),
            "question": [q for q, _, _ in pairs],
            "answer": [a for _, a, _ in pairs],
        },
        schema={"faq_id": pl.String, "question": pl.String, "answer": pl.String},
    )


def _markdown_pairs(content: str, name: str) -> list[tuple[str, str, int]]:
    """(question, answer, line) per Markdown question; section and title headings skipped."""
    entries: list[_Entry] = []
    in_fence = False
    for number, line in enumerate(content.lstrip("\ufeff").splitlines(), start=1):
        current = entries[-1] if entries else None
        if _FENCE.match(line):
            in_fence = not in_fence
            if current is not None:
                current.answer.append(line)
            continue
        heading = None if in_fence else _HEADING.match(line)
        if heading and len(heading.group(1)) <= _QUESTION_LEVELS:
            entries.append(_Entry(len(heading.group(1)), heading.group(2), number))
            continue
        q_mark = None if in_fence else _Q_MARK.match(line)
        if q_mark:
            entries.append(_Entry(_QA_LEVEL, q_mark.group(1), number, awaiting_answer=True))
            continue
        answer = None if in_fence else _A_MARK.match(line)
        if answer and current is not None and current.awaiting_answer:
            current.awaiting_answer = False
            current.answer.append(answer.group(1))
        elif answer and current is None:
            raise ValueError(f"{name}: line {number}: an answer before any question")
        elif current is not None and current.awaiting_answer:
            current.question += " " + line.strip()  # a question that wraps onto more lines
        elif current is not None:
            # "## Question" then "**A:** ..." is common: the marker is formatting, not text
            current.answer.append(answer.group(1) if answer else line)
        # text before the first heading is a preamble, not an answer

    pairs = []
    for k, entry in enumerate(entries):
        following = entries[k + 1] if k + 1 < len(entries) else None
        text = _plain_answer(entry.answer)
        nests = following is not None and following.level > entry.level
        if k == 0 and entry.level == 1 and (nests or not text):
            continue  # the document's '# Title'; its text is an introduction
        if nests and not text:
            continue  # a section heading such as '## Payments' over '### ...' or Q/A pairs
        question = _plain_question(entry.question)
        if entry.awaiting_answer:
            raise ValueError(
                f"{name}: line {entry.line}: question {question!r} has no answer "
                "(expected an '**A:** ...' line after the '**Q:** ...' line)"
            )
        if not question:
            raise ValueError(f"{name}: line {entry.line}: empty question heading")
        if not text:
            raise ValueError(
                f"{name}: line {entry.line}: question {question!r} has an empty answer "
                "(expected the answer text below the heading)"
            )
        pairs.append((question, text, entry.line))
    if not pairs:
        raise ValueError(
            f"{name}: no questions found (expected '## Question' headings followed by the answer, "
            "or '**Q:** ...' / '**A:** ...' lines)"
        )
    return pairs


def _csv_pairs(content: str, name: str, delimiter: str) -> list[tuple[str, str, int]]:
    """(question, answer, line) per CSV row of the ``question`` and ``answer`` columns."""
    text = content.lstrip("\ufeff")
    first_line = next((ln for ln in text.splitlines() if ln.strip()), "")
    if delimiter == "," and "," not in first_line:
        # spreadsheets in many locales export ';'-separated "CSV"
        delimiter = next((d for d in (";", "\t", "|") if d in first_line), delimiter)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    expected = "a header row 'question,answer' and one row per entry"
    try:
        header = next((row for row in reader if any(c.strip() for c in row)), None)
        if header is None:
            raise ValueError(f"{name}: no questions found (expected {expected})")
        columns = [c.strip().lower() for c in header]
        missing = [c for c in ("question", "answer") if c not in columns]
        if missing:
            found = ", ".join(c for c in columns if c) or "no columns"
            what = "column" if len(missing) == 1 else "columns"
            raise ValueError(
                f"{name}: missing {what} {', '.join(repr(m) for m in missing)} (found: {found})"
            )
        for column in ("question", "answer"):
            if columns.count(column) > 1:
                raise ValueError(f"{name}: column {column!r} appears more than once in the header")
        qi, ai = columns.index("question"), columns.index("answer")
        pairs = []
        line = reader.line_num + 1
        for row in reader:
            if any(c.strip() for c in row):
                cells = [row[i].strip() if i < len(row) else "" for i in (qi, ai)]
                question, answer = _plain_question(cells[0]), _plain_answer(cells[1].splitlines())
                for value, what in ((question, "question"), (answer, "answer")):
                    if not value:
                        raise ValueError(
                            f"{name}: line {line}: empty {what} (expected a question and its "
                            "answer in the 'question' and 'answer' columns)"
                        )
                pairs.append((question, answer, line))
            line = reader.line_num + 1
    except csv.Error as error:
        raise ValueError(f"{name}: line {reader.line_num}: unreadable CSV ({error})") from error
    if not pairs:
        raise ValueError(f"{name}: no questions found (expected {expected})")
    return pairs


def _inline_plain(text: str) -> str:
    """Markdown inline formatting removed: links keep their target, emphasis its words."""
    text = re.sub(r"!\[([^\]]*)\]\([^)]*\)", r"\1", text)
    text = re.sub(r"\[([^\]]+)\]\((\S+?)(?:\s+\"[^\"]*\")?\)", r"\1 (\2)", text)
    text = re.sub(r"<((?:https?://|mailto:)[^>]+)>", r"\1", text)
    text = re.sub(r"</?[A-Za-z][^>]*>", "", text)
    text = re.sub(r"`([^`]+)`", r"\1", text)
    text = re.sub(r"(\*\*|__)(?=\S)(.+?)(?<=\S)\1", r"\2", text)
    text = re.sub(r"(?<![\w*])\*(?=\S)(.+?)(?<=\S)\*(?![\w*])", r"\1", text)
    text = re.sub(r"(?<![\w_])_(?=\S)(.+?)(?<=\S)_(?![\w_])", r"\1", text)
    return html.unescape(text)


def _plain_question(text: str) -> str:
    text = _inline_plain(text)
    text = re.sub(r"^\s*(?:Q|Question)\s*:\s*", "", text, flags=re.I)
    return " ".join(text.split())


def _plain_answer(lines: list[str]) -> str:
    """Readable answer text: paragraphs joined, list items on their own lines."""
    text = re.sub(r"<!--.*?-->", "", "\n".join(lines), flags=re.S)
    paragraphs: list[list[str]] = [[]]
    in_fence = False
    for raw in text.splitlines():
        if _FENCE.match(raw):
            in_fence = not in_fence
            continue
        if in_fence:  # code keeps its lines as written
            paragraphs[-1].append(raw.rstrip())
            continue
        line = raw.strip()
        line = re.sub(r"^(?:>\s?)+", "", line)  # block quotes
        line = re.sub(r"^#{1,6}\s+", "", line)  # a '####' sub-heading inside the answer
        if _RULE.match(line):
            continue
        if not line:
            if paragraphs[-1]:
                paragraphs.append([])
            continue
        line = re.sub(r"^[*+]\s+", "- ", _inline_plain(line))
        if _LIST_ITEM.match(line) or not paragraphs[-1]:
            paragraphs[-1].append(line)
        else:
            paragraphs[-1][-1] += " " + line
    return "\n\n".join("\n".join(p) for p in paragraphs if p).strip()


def _slug(question: str) -> str:
    ascii_ish = unicodedata.normalize("NFKD", question)
    ascii_ish = "".join(c for c in ascii_ish if not unicodedata.combining(c))
    ascii_ish = re.sub(r"['\u2019]", "", ascii_ish)  # "can't" -> "cant", not "can-t"
    slug = re.sub(r"[\W_]+", "-", ascii_ish.lower()).strip("-")
    if len(slug) > _SLUG_MAX:
        slug = slug[:_SLUG_MAX].rsplit("-", 1)[0]
    # a question of symbols only still needs an id that survives re-reading the same file
    return slug or "faq-" + hashlib.sha1(question.encode()).hexdigest()[:8]


def _unique_slugs(questions: list[str]) -> list[str]:
    """Slugs of the questions, with -2, -3 ... on questions that slug alike, in file order."""
    slugs: list[str] = []
    taken: set[str] = set()
    for question in questions:
        base = candidate = _slug(question)
        n = 1
        while candidate in taken:
            n += 1
            candidate = f"{base}-{n}"
        taken.add(candidate)
        slugs.append(candidate)
    return slugs


# --- suggested answers --------------------------------------------------------------------------

#: Share of an FAQ entry's vector that comes from its question (the rest from its answer): the
#: short question names the problem a ticket describes, and would otherwise be drowned by the
#: longer answer's words (generated tickets, four seeds: 95-97 % get an on-topic answer from
#: examples/faq.md; question and answer as one text: 83-90 %).
QUESTION_WEIGHT = 0.5

_SUGGESTION_SCHEMA = {
    "feedback_id": pl.String,
    "faq_id": pl.String,
    "faq_question": pl.String,
    "suggested_answer": pl.String,
    "answer_similarity": pl.Float64,
}


def _normalise(text: str) -> str:
    """Lower-case text without HTML tags or entities, curly apostrophes straightened."""
    text = html.unescape(re.sub(r"<[^>]*>", " ", text))
    return text.replace("\u2019", "'").replace("\u2018", "'").lower()


@lru_cache(maxsize=65536)
def _stem(word: str) -> str:
    """A light suffix fold (a small Porter step 1): refunded, refunds -> refund; arrives -> arriv.

    Customers and FAQ writers inflect the same words differently ("refunded" in a ticket,
    "refund" in the answer); without it TF-IDF treats them as unrelated.
    """
    if len(word) <= 3 or not word.isalpha():
        return word
    if word.endswith("ies") or word.endswith("ied"):
        return word[:-3] + "y"
    for suffix in ("ing", "ed"):
        stem = word[: -len(suffix)]
        if word.endswith(suffix) and len(stem) >= 3 and re.search(r"[aeiouy]", stem):
            if len(stem) > 3 and stem[-1] == stem[-2] and stem[-1] not in "lsz":
                stem = stem[:-1]  # logged -> log, stopped -> stop
            return stem[:-1] if stem.endswith("e") else stem
    if word.endswith("sses"):
        return word[:-2]
    if re.search(r"(?:ch|sh|x|z)es$", word):
        return word[:-2]  # crashes -> crash, boxes -> box
    if word.endswith("s") and word[-2] not in "siu":  # keep class, analysis, status
        word = word[:-1]
    return word[:-1] if word.endswith("e") else word


_TOKEN = re.compile(r"(?u)\b\w\w+\b")


def _analyse(text: str) -> list[str]:
    """Word 1- and 2-grams of the normalised text, English stop words dropped, suffixes folded."""
    words = [_stem(w) for w in _TOKEN.findall(_normalise(text)) if w not in ENGLISH_STOP_WORDS]
    return words + [f"{a} {b}" for a, b in itertools.pairwise(words)]


def suggested_answers(
    tickets: pl.DataFrame, faq: pl.DataFrame, min_similarity: float = 0.2
) -> pl.DataFrame:
    """Per ticket, the most similar FAQ entry and its cosine similarity (null below threshold)."""
    _require(tickets, ("feedback_id", "text"), "tickets")
    _require(faq, ("faq_id", "question", "answer"), "faq")
    if not 0.0 <= min_similarity <= 1.0:
        raise ValueError(f"min_similarity must be in [0, 1], got {min_similarity}")
    n = tickets.height
    if faq.height == 0:
        return tickets.select(
            pl.col("feedback_id").cast(pl.String),
            *(pl.lit(None, dtype=d).alias(c) for c, d in list(_SUGGESTION_SCHEMA.items())[1:]),
        )
    if n == 0:
        return pl.DataFrame(schema=_SUGGESTION_SCHEMA)
    queries = _ticket_texts(tickets)
    questions = faq["question"].cast(pl.String).fill_null("").to_list()
    answers = faq["answer"].cast(pl.String).fill_null("").to_list()
    # _analyse does what ngram_range=(1, 2), stop_words="english" would, plus suffix folding
    vectorizer = TfidfVectorizer(analyzer=_analyse, sublinear_tf=True, dtype=np.float64)
    try:
        vectorizer.fit([f"{q}\n{a}" for q, a in zip(questions, answers, strict=True)])
    except ValueError:  # every FAQ word is a stop word: nothing can match
        similarity = np.zeros((n, faq.height))
    else:
        # Transformed rows are L2-normalised, so after normalising the blend the dot product is
        # the cosine similarity.
        entries = normalize(
            QUESTION_WEIGHT * vectorizer.transform(questions)
            + (1.0 - QUESTION_WEIGHT) * vectorizer.transform(answers)
        )
        similarity = (vectorizer.transform(queries) @ entries.T).toarray()
    best = similarity.argmax(axis=1)
    best_similarity = np.clip(similarity[np.arange(n), best], 0.0, 1.0)
    keep = pl.Series(best_similarity >= min_similarity)
    chosen = faq.select("faq_id", "question", "answer").cast(pl.String)[best]
    return pl.DataFrame(
        {
            "feedback_id": tickets["feedback_id"].cast(pl.String),
            "faq_id": chosen["faq_id"],
            "faq_question": chosen["question"],
            "suggested_answer": chosen["answer"],
            "answer_similarity": pl.Series(best_similarity, dtype=pl.Float64),
        }
    ).with_columns(
        pl.when(keep).then(pl.col(c)).alias(c)
        for c in ("faq_id", "faq_question", "suggested_answer")
    )


def _ticket_texts(tickets: pl.DataFrame) -> list[str]:
    """Title + text per ticket; an empty text gives "" (a subject alone is too little to answer)."""
    text = pl.col("text").cast(pl.String).fill_null("")
    if "title" in tickets.columns:
        combined = pl.concat_str(
            [pl.col("title").cast(pl.String).fill_null(""), text], separator=". "
        )
        text = pl.when(text.str.strip_chars() == "").then(pl.lit("")).otherwise(combined)
    return tickets.select(text.alias("q"))["q"].to_list()


# --- urgency ------------------------------------------------------------------------------------


def urgency_scores(
    tickets: pl.DataFrame,
    history: pl.DataFrame,
    high_value_users: pl.DataFrame | None = None,
    repeat_window_days: int = 14,
) -> pl.DataFrame:
    """Per ticket, urgency in [0, 1] (1 = answer first), its reasons and contacts in the window."""
    _require(tickets, ("feedback_id", "user_id", "created_at", "text"), "tickets")
    _require(history, ("user_id", "created_at"), "history")
    if high_value_users is not None:
        _require(high_value_users, ("user_id",), "high_value_users")
    if repeat_window_days < 1:
        raise ValueError(f"repeat_window_days must be >= 1, got {repeat_window_days}")

    repeat = _repeat_contacts(tickets, history, repeat_window_days)
    vip = (
        high_value_users["user_id"].cast(pl.String).drop_nulls().unique()
        if high_value_users is not None
        else pl.Series([], dtype=pl.String)
    )
    text = pl.col("text").cast(pl.String).fill_null("")
    if "title" in tickets.columns:
        text = pl.concat_str([pl.col("title").cast(pl.String).fill_null(""), text], separator=". ")
    text = text.str.replace_all(r"<[^>]*>", " ").str.replace_all("[\u2018\u2019]", "'")
    negativity = (
        pl.col("negativity").cast(pl.Float64).fill_nan(None).clip(0.0, 1.0)
        if "negativity" in tickets.columns
        else pl.lit(None, dtype=pl.Float64)
    )
    user = pl.col("user_id").cast(pl.String)
    parts = tickets.select(
        pl.col("feedback_id").cast(pl.String),
        _urgent=text.str.extract(_URGENT_RE, 0).str.to_lowercase(),
        _money=text.str.contains(_ORDER_PAYMENT_RE),
        _negativity=negativity.fill_null(0.0),
        _vip=user.is_not_null() & user.is_in(vip.implode()),
        repeat_contacts=repeat,
    )
    repeat_part = (
        ((pl.col("repeat_contacts") - 1) / (REPEAT_SATURATION - 1)).clip(0.0, 1.0).fill_null(0.0)
    )
    urgency = (
        URGENT_WORDING_WEIGHT * pl.col("_urgent").is_not_null().cast(pl.Float64)
        + NEGATIVITY_WEIGHT * pl.col("_negativity")
        + REPEAT_WEIGHT * repeat_part
        + ORDER_PAYMENT_WEIGHT * pl.col("_money").cast(pl.Float64)
        + HIGH_VALUE_WEIGHT * pl.col("_vip").cast(pl.Float64)
    ).clip(0.0, 1.0)
    n = pl.col("repeat_contacts")
    nth = n.cast(pl.String) + pl.when((n % 100).is_between(11, 13)).then(pl.lit("th")).otherwise(
        pl.col("repeat_contacts").mod(10).replace_strict({1: "st", 2: "nd", 3: "rd"}, default="th")
    )
    reasons = pl.concat_list(
        pl.when(pl.col("_urgent").is_not_null()).then(
            pl.format('urgent wording ("{}")', pl.col("_urgent"))
        ),
        pl.when(pl.col("_negativity") >= NEGATIVE_TONE_AT).then(pl.lit("negative tone")),
        pl.when(n >= 2).then(nth + pl.lit(f" contact in {repeat_window_days} days")),
        pl.when(pl.col("_money")).then(pl.lit("order/payment problem")),
        pl.when(pl.col("_vip")).then(pl.lit("high-value customer")),
    ).list.drop_nulls()
    return parts.select(
        "feedback_id",
        urgency.alias("urgency"),
        reasons.alias("urgency_reasons"),
        pl.col("repeat_contacts").cast(pl.Int64),
    )


def _utc(frame: pl.DataFrame, what: str) -> pl.Expr:
    """``created_at`` as a microsecond UTC datetime (naive datetimes are taken to be UTC)."""
    dtype = frame.schema["created_at"]
    if dtype == pl.Date:
        return pl.col("created_at").cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
    if isinstance(dtype, pl.Datetime):
        expr = pl.col("created_at").dt.cast_time_unit("us")
        if dtype.time_zone is None:
            return expr.dt.replace_time_zone("UTC")
        return expr.dt.convert_time_zone("UTC")
    if dtype == pl.Null:
        return pl.lit(None, dtype=pl.Datetime("us", "UTC"))
    raise ValueError(f"{what}: created_at must be a datetime, got {dtype}")


def _repeat_contacts(tickets: pl.DataFrame, history: pl.DataFrame, days: int) -> pl.Series:
    """Contacts by the ticket's user in the ``days`` up to and including the ticket (null: no user).

    The tickets themselves count as contacts whether or not ``history`` repeats them: contacts
    are the distinct (user, instant) pairs of both frames.
    """
    key = pl.Schema({"user_id": pl.String(), "created_at": pl.Datetime("us", "UTC")})
    contacts = (
        pl.concat(
            [
                f.select(pl.col("user_id").cast(pl.String), _utc(f, name).alias("created_at"))
                for f, name in ((tickets, "tickets"), (history, "history"))
            ]
        )
        .cast(key)
        .drop_nulls()
        .unique()
        .sort("created_at")
        .with_columns(_k=pl.int_range(1, pl.len() + 1, dtype=pl.Int64).over("user_id"))
    )
    queries = (
        tickets.select(pl.col("user_id").cast(pl.String), _utc(tickets, "tickets").alias("_t"))
        .cast({"_t": key["created_at"]})
        .with_row_index("_row")
        .drop_nulls()
        .with_columns(_start=pl.col("_t") - pl.duration(days=days))
    )
    up_to = queries.sort("_t").join_asof(
        contacts.rename({"created_at": "_t"}),
        on="_t",
        by="user_id",
        strategy="backward",
        check_sortedness=False,
    )
    # contacts strictly before the window start: one exactly `days` days earlier is still in
    before = queries.sort("_start").join_asof(
        contacts.rename({"created_at": "_start", "_k": "_before"}),
        on="_start",
        by="user_id",
        strategy="backward",
        allow_exact_matches=False,
        check_sortedness=False,  # sorted on the key above, hence within every user too
    )
    counts = up_to.select("_row", "_k").join(before.select("_row", "_before"), on="_row")
    counts = counts.select("_row", n=pl.col("_k") - pl.col("_before").fill_null(0))
    rows = pl.DataFrame({"_row": pl.int_range(0, tickets.height, eager=True).cast(pl.UInt32)})
    return rows.join(counts, on="_row", how="left").sort("_row")["n"].rename("repeat_contacts")


def _require(frame: pl.DataFrame, columns: tuple[str, ...], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(
            f"{what}: missing column(s) {', '.join(missing)} (found: {', '.join(frame.columns)})"
        )
