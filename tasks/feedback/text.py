"""Text as the models and reports read it: plain text, tokens, terms, aspects and phrases.

Everything here is a Polars expression or a frame-in, frame-out function, shared by training
and nightly scoring so that both see exactly the same terms.
"""

from __future__ import annotations

import re

import polars as pl
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

#: A word (letters, digits, inner apostrophes) or one pictographic emoji: "😡" carries sentiment.
TOKEN = r"[\p{L}\p{N}_][\p{L}\p{N}_']*|\p{Extended_Pictographic}"
#: Few enough that a regex replace per entity stays cheap; anything rarer is left as written.
HTML_ENTITIES = {
    "&nbsp;": " ",
    "&quot;": '"',
    "&#34;": '"',
    "&#39;": "'",
    "&apos;": "'",
    "&lt;": "<",
    "&gt;": ">",
    "&amp;": "&",  # last: "&amp;lt;" means the text "&lt;"
}
#: Words that carry sentiment in a complaint although stop-word lists drop them.
KEPT_STOP_WORDS = frozenset({"not", "no", "never", "nothing", "too", "very", "again", "only"})
STOP_WORDS = frozenset(ENGLISH_STOP_WORDS) - KEPT_STOP_WORDS | {"item", "product", "just"}


def plain_text(text: pl.Expr) -> pl.Expr:
    """``text`` without HTML tags (a tag becomes a space), common entities decoded, runs of
    whitespace collapsed and the ends trimmed."""
    out = text.str.replace_all(r"<[A-Za-z/!][^<>]{0,200}>", " ")
    for entity, char in HTML_ENTITIES.items():
        out = out.str.replace_all(entity, char, literal=True)
    return out.str.replace_all(r"\s+", " ").str.strip_chars()


def capped_text(text: pl.Expr, max_chars: int) -> pl.Expr:
    """``text`` cut to its first ``max_chars`` characters."""
    return text.str.slice(0, max_chars)


def tokens(text: pl.Expr) -> pl.Expr:
    """The lower-cased words and emojis of ``text``, in order."""
    return text.str.to_lowercase().str.extract_all(TOKEN)


def term_counts(docs: pl.DataFrame, doc: str = "doc", text: str = "text") -> pl.DataFrame:
    """How often each term (word or two-word phrase) occurs in each document: ``doc``, ``term``,
    ``count``, in no particular order; documents without a term have no row."""
    words = (
        docs.lazy()
        .select(pl.col(doc), tokens(pl.col(text)).alias("term"))
        .explode("term")
        .drop_nulls("term")
    )
    # Exploded rows keep document order, so the next row is the next word of the same document
    # unless the document changes: a global shift is far cheaper than one per document.
    same_doc = pl.col(doc).shift(-1) == pl.col(doc)
    bigram = pl.when(same_doc).then(pl.col("term") + " " + pl.col("term").shift(-1))
    pairs = words.select(pl.col(doc), bigram.alias("term")).drop_nulls("term")
    return (
        pl.concat([words, pairs])
        .group_by(doc, "term")
        .agg(pl.len().cast(pl.Float32).alias("count"))
        .collect()
    )


def aspect_patterns(lexicon: dict[str, list[str]]) -> dict[str, str]:
    """Per aspect, one case-insensitive regex matching any of its words or phrases as whole
    words; a trailing "*" matches any ending ("deliver*": delivery, delivered)."""
    patterns = {}
    for aspect, words in lexicon.items():
        alternatives = []
        for word in sorted(words, key=len, reverse=True):
            stem = word.strip().rstrip("*")
            if not stem:
                continue
            body = r"\s+".join(re.escape(part) for part in stem.split())
            alternatives.append(body + (r"\w*" if word.strip().endswith("*") else ""))
        if alternatives:
            patterns[aspect] = r"(?i)\b(?:" + "|".join(alternatives) + r")\b"
    return patterns


def aspects(text: pl.Expr, lexicon: dict[str, list[str]]) -> pl.Expr:
    """The aspects of ``lexicon`` that ``text`` mentions, in lexicon order (empty: none)."""
    patterns = aspect_patterns(lexicon)
    if not patterns:
        return pl.lit([], dtype=pl.List(pl.String))
    found = [
        pl.when(text.str.contains(pattern)).then(pl.lit(aspect))
        for aspect, pattern in patterns.items()
    ]
    return pl.concat_list(found).list.drop_nulls()


def phrase_counts(docs: pl.LazyFrame, keys: list[str], text: str = "text") -> pl.LazyFrame:
    """How many documents per ``keys`` mention each phrase: runs of one to three words within a
    sentence, stop words removed (``keys``, ``phrase``, ``docs``)."""
    clauses = (
        docs.with_row_index("_doc")
        .select(*keys, "_doc", _clauses(pl.col(text)))
        .explode(text)
        .with_row_index("_clause")
        .select(*keys, "_doc", "_clause", pl.col(text).str.extract_all(TOKEN).alias("word"))
        .explode("word")
        .drop_nulls("word")
        .filter(
            pl.col("word").is_in(list(STOP_WORDS)).not_() & (pl.col("word").str.len_chars() > 1)
        )
    )
    # After the stop words go, neighbours within one clause form the phrases ("arrived broken").
    nxt = [pl.col("word").shift(-i) for i in (1, 2)]
    same = [pl.col("_clause").shift(-i) == pl.col("_clause") for i in (1, 2)]
    grams = clauses.select(
        *keys,
        "_doc",
        pl.concat_list(
            pl.col("word"),
            pl.when(same[0]).then(pl.col("word") + " " + nxt[0]),
            pl.when(same[0] & same[1]).then(pl.col("word") + " " + nxt[0] + " " + nxt[1]),
        ).alias("phrase"),
    ).explode("phrase")
    return (
        grams.drop_nulls("phrase")
        .filter(pl.col("phrase").is_in(list(KEPT_STOP_WORDS)).not_())
        .unique([*keys, "_doc", "phrase"])
        .group_by(*keys, "phrase")
        .agg(pl.len().alias("docs"))
    )


def _clauses(text: pl.Expr) -> pl.Expr:
    # str.split takes a literal separator: every clause break becomes one first.
    return text.str.to_lowercase().str.replace_all(r"[.!?;,:()\n]+", "|").str.split("|")


def top_phrases(counts: pl.LazyFrame, keys: list[str], top: int) -> pl.LazyFrame:
    """The ``top`` phrases per ``keys`` by documents mentioning them (ties: longer phrase, then
    alphabetical), as a list; a phrase inside a longer one with as many mentions is left out."""
    ranked = (
        counts.with_columns(pl.col("phrase").str.count_matches(" ").alias("_spaces"))
        .sort(
            [*keys, "docs", "_spaces", "phrase"],
            descending=[False] * len(keys) + [True, True, False],
        )
        # Only the leaders can make the list: shadowing is checked among them, not all pairs.
        .group_by(keys, maintain_order=True)
        .head(top * 4)
    )
    # "arrived" and "arrived broken" with the same count say the same thing: keep the longer.
    longer = ranked.select(*keys, pl.col("phrase").alias("_long"), pl.col("docs").alias("_n"))
    shadowed = (
        ranked.join(longer, on=keys)
        .filter(
            (pl.col("_long") != pl.col("phrase"))
            & (pl.col("_n") >= pl.col("docs"))
            & (" " + pl.col("_long") + " ").str.contains(" " + pl.col("phrase") + " ", literal=True)
        )
        .select(*keys, "phrase")
        .unique()
    )
    return (
        ranked.join(shadowed, on=[*keys, "phrase"], how="anti", maintain_order="left")
        .group_by(keys, maintain_order=True)
        .agg(pl.col("phrase").head(top).alias("top_complaints"))
    )
