"""Campaign briefs: the facts from tiny frames, the template writer, and a plugged-in writer."""

from __future__ import annotations

from datetime import UTC, datetime

import polars as pl
import pytest

from nightowl.tasks.report import briefs
from nightowl.tasks.report.kpis import segments
from tests.tasks.report.test_kpis import AS_OF, SCORES, VALUE

LISTS = pl.DataFrame(
    {
        "user_id": ["u2", "u2", "u4", "u4", "u1", "u3"],
        "rank": [1, 2, 1, 4, 1, 1],
        "item_id": ["a", "b", "a", "c", "c", "b"],
        "title": ["Apple", "Bread", "Apple", "Cheese", "Cheese", "Bread"],
        "category": ["fruit", "bakery", "fruit", "dairy", "dairy", "bakery"],
    }
)
FEEDBACK = pl.DataFrame(
    {
        "item_id": ["a", "a", "a", "b"],
        "text": ["Crisp and sweet, lovely apple", "crisp and sweet again", "so crisp and sweet",
                 "stale"],
        "sentiment_label": ["positive", "positive", "positive", "negative"],
    }
).lazy()  # fmt: skip


class EchoWriter:
    """A stand-in for a text model: says back what it was given."""

    name = "echo-1"

    def write(self, facts: briefs.BriefFacts) -> briefs.BriefCopy:
        return briefs.BriefCopy(headline=facts.segment, message=" | ".join(facts.items))


def test_segment_items_count_users_whose_first_places_hold_the_item():
    picked = briefs.segment_items(SCORES, LISTS, top=5)
    at_risk = picked.filter(pl.col("segment") == "at_risk")
    # u2 (a, b) and u4 (a; c is 4th): Apple for two users, Bread for one.
    assert at_risk.select("item_id", "users", "place").rows() == [("a", 2, 1), ("b", 1, 2)]


def test_segment_words_quote_liked_phrases_not_the_items_own_names():
    picked = briefs.segment_items(SCORES, LISTS, top=5)
    words = briefs.segment_words(picked, FEEDBACK, top=3)
    said = dict(words.iter_rows())
    assert said["at_risk"][0] == "crisp sweet"  # stop words out, the phrase first
    assert all("apple" not in w for w in said["at_risk"])  # "apple" is the item's own name
    assert "stale" not in said["at_risk"]  # negative feedback is no selling point


def test_send_times_are_the_busiest_purchase_hour_in_the_business_zone():
    ev = pl.DataFrame(
        {
            "user_id": ["u2", "u2", "u4", "u3"],
            "event_time": [datetime(2026, 11, 24, 18, tzinfo=UTC)] * 2
            + [datetime(2026, 11, 25, 9, tzinfo=UTC), datetime(2026, 11, 26, 7, tzinfo=UTC)],
            "event_type": ["purchase", "purchase", "purchase", "view"],
        }
    ).lazy()
    times = briefs.send_times(ev, SCORES, AS_OF, 30, "Europe/Berlin")
    rows = {r["segment"]: r for r in times.iter_rows(named=True)}
    assert (rows["at_risk"]["send_weekday"], rows["at_risk"]["send_hour"]) == ("Tuesday", 19)
    # Prospects bought nothing: their busiest hour of any activity.
    assert (rows["prospect"]["send_weekday"], rows["prospect"]["send_hour"]) == ("Thursday", 8)


def _briefs(writer: briefs.BriefWriter) -> pl.DataFrame:
    picked = briefs.segment_items(SCORES, LISTS, top=5)
    words = briefs.segment_words(picked, FEEDBACK, top=3)
    times = pl.DataFrame(
        {"segment": ["at_risk"], "send_weekday": ["Tuesday"], "send_hour": [19]},
        schema_overrides={"send_hour": pl.Int32},
    )
    return briefs.campaign_briefs(
        segments(SCORES, VALUE), picked, words, times, writer, "Europe/Berlin", "r1"
    )


def test_the_template_writer_fills_its_copy_with_the_facts():
    table = _briefs(briefs.TemplateWriter())
    assert table.height == 3  # one per segment with users
    row = table.filter(pl.col("segment") == "at_risk").row(0, named=True)
    assert row["audience"] == 2 and row["top_items"] == ["Apple", "Bread"]
    assert row["headline"] == "We miss you: Apple is waiting"
    assert "Apple and Bread" in row["message"] and "“crisp sweet”" in row["message"]
    assert row["send_time"] == "Tuesday 19:00 Europe/Berlin"
    assert row["writer"] == "template-v1" and row["model_version"] == "r1"
    no_lists = table.filter(pl.col("segment") == "champions").row(0, named=True)
    assert no_lists["top_items"] == ["Cheese"] and no_lists["send_time"] is None


def test_a_plugged_in_writer_writes_every_brief():
    writer = briefs.brief_writer("tests.tasks.report.test_briefs:EchoWriter")
    table = _briefs(writer)
    assert set(table["writer"]) == {"echo-1"}
    assert table.filter(pl.col("segment") == "at_risk")["message"].item() == "Apple | Bread"


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ("gpt", "expected 'template' or 'package.module:Class'"),
        ("no.such.module:Writer", "cannot load"),
        ("tests.tasks.report.test_briefs:LISTS", "cannot load"),  # a frame is not callable
        ("tests.tasks.report.test_briefs:FEEDBACK_WRITER", "cannot load"),
        ("tests.tasks.report.test_briefs:NotAWriter", "no name and write(facts) method"),
    ],
)
def test_a_writer_that_cannot_be_used_is_refused_naming_the_setting(spec, says):
    with pytest.raises(ValueError, match=r"report\.brief_writer") as caught:
        briefs.brief_writer(spec)
    assert says in str(caught.value)


class NotAWriter:
    """Has no ``write``."""


def test_listed_joins_in_english():
    assert briefs.listed([]) == "" and briefs.listed(["a"]) == "a"
    assert briefs.listed(["a", "b", "c"]) == "a, b and c"
