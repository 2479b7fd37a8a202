"""Plain text, terms, aspects and complaint phrases."""

from __future__ import annotations

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from nightowl.schemas.config import DEFAULT_ASPECTS
from nightowl.tasks.feedback.text import (
    aspects,
    capped_text,
    phrase_counts,
    plain_text,
    term_counts,
    top_phrases,
)


def _plain(value: str | None) -> str | None:
    return pl.select(plain_text(pl.lit(value, pl.String))).item()


@pytest.mark.parametrize(
    ("raw", "plain"),
    [
        ("Great!<br /><br />Would buy again", "Great! Would buy again"),
        ("<p>Salt &amp; vinegar</p>", "Salt & vinegar"),
        ("&quot;ok&quot; &#39;fine&#39;", "\"ok\" 'fine'"),
        ("a &amp;lt; b", "a &lt; b"),  # decoded once, as written
        ("  spaced \n\t out  ", "spaced out"),
        ("3 < 5 and 7 > 2", "3 < 5 and 7 > 2"),  # not tags
        (None, None),
        ("", ""),
    ],
)
def test_plain_text_drops_tags_and_decodes_entities(raw, plain):
    assert _plain(raw) == plain


def test_capped_text_cuts_characters_not_bytes():
    out = pl.select(capped_text(pl.lit("ééééé"), 3)).item()
    assert out == "ééé"


def test_term_counts_are_words_and_adjacent_pairs_within_a_document():
    docs = pl.DataFrame({"doc": [0, 1], "text": ["Not good, not good 😡", "good"]})
    counts = term_counts(docs)
    expected = pl.DataFrame(
        {
            "doc": [0, 0, 0, 0, 0, 0, 0, 1],
            "term": ["good", "good not", "good 😡", "not", "not good", "😡", "", "good"],
            "count": [2.0, 1.0, 1.0, 2.0, 2.0, 1.0, 0.0, 1.0],
        }
    ).filter(pl.col("term") != "")
    assert_frame_equal(
        counts.sort("doc", "term"),
        expected.with_columns(pl.col("count").cast(pl.Float32)).sort("doc", "term"),
    )
    # No pair spans two documents: "😡 good" does not exist.
    assert "😡 good" not in counts["term"].to_list()


@settings(max_examples=40, deadline=None)
@given(st.lists(st.text(alphabet="ab c.", max_size=12), min_size=1, max_size=6))
def test_word_counts_add_up_to_the_tokens_of_each_document(texts):
    docs = pl.DataFrame({"doc": list(range(len(texts))), "text": texts})
    counts = term_counts(docs)
    words = counts.filter(pl.col("term").str.contains(" ").not_())
    for i, text in enumerate(texts):
        tokens = text.lower().replace(".", " ").split()
        got = words.filter(pl.col("doc") == i)["count"].sum()
        assert got == len(tokens)
        pairs = counts.filter((pl.col("doc") == i) & pl.col("term").str.contains(" "))
        assert pairs["count"].sum() == max(0, len(tokens) - 1)


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("The courier rescheduled my delivery twice", ["delivery"]),
        ("It arrived broken", ["quality", "delivery"]),
        ("The app logs me out at checkout", ["app_bugs"]),
        ("An apple a day; it appeared on time", []),  # 'app' is a whole word only
        ("Too small, I need a bigger size", ["size_fit"]),
        ("Please refund me, I was charged twice", ["refund_payment"]),
        ("", []),
    ],
)
def test_aspects_match_whole_words_and_star_endings(text, found):
    out = pl.select(aspects(pl.lit(text), DEFAULT_ASPECTS)).item().to_list()
    assert out == found


def test_an_empty_lexicon_tags_nothing():
    assert pl.select(aspects(pl.lit("anything"), {})).item().to_list() == []


def test_top_complaints_count_documents_and_prefer_the_longer_phrase():
    docs = pl.LazyFrame(
        {
            "item_id": ["a", "a", "a", "b"],
            "text": [
                "It arrived broken. The box was crushed!",
                "Arrived broken, again.",
                "ARRIVED BROKEN arrived broken",  # one document counts once
                "The zip broke",
            ],
        }
    )
    counts = phrase_counts(docs, ["item_id"]).collect()
    a = dict(counts.filter(pl.col("item_id") == "a").select("phrase", "docs").iter_rows())
    assert a["arrived broken"] == 3 and a["box crushed"] == 1
    assert "broken box" not in a  # "." ends a clause: no phrase crosses it
    assert "not" not in a and "the" not in a  # stop words and lone negations are not phrases
    top = top_phrases(counts.lazy(), ["item_id"], 2).collect().sort("item_id")
    assert top.to_dicts() == [
        {"item_id": "a", "top_complaints": ["arrived broken", "arrived broken arrived"]},
        {"item_id": "b", "top_complaints": ["zip broke"]},
    ]
