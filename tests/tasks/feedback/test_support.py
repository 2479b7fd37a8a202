"""Support triage: FAQ parsing, suggested answers and urgency, on literals and generated tickets."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.metrics import roc_auc_score

from nightowl.demo.generate import (
    PAYMENT_URGENCY_PHRASES,
    SUPPORT_BODIES,
    SUPPORT_CLOSERS,
    URGENCY_PHRASES,
    generate_landing,
)
from nightowl.tasks.feedback.support import (
    HIGH_VALUE_WEIGHT,
    NEGATIVITY_WEIGHT,
    ORDER_PAYMENT_WEIGHT,
    REPEAT_WEIGHT,
    URGENT_WORDING_WEIGHT,
    faq_entries,
    suggested_answers,
    urgency_scores,
)

REPO = Path(__file__).resolve().parents[3]
T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)

# --- faq_entries --------------------------------------------------------------------------------

MARKDOWN = """\
# Help centre

Welcome! Start here.

## Where is my **order**?

Most orders arrive in *2-4 working days*.
See [tracking](https://shop.example/track) for the latest scan.

- Next-day orders arrive tomorrow.
* Weekend orders ship on Monday.

### How do I reset my password?

Choose `Forgot password?` on the sign-in page.

## Payments

**Q:** Can I pay with PayPal?
**A:** Yes, at checkout.

Q: Do you take Klarna?
A: Not yet.
"""


def test_markdown_headings_are_questions_and_titles_sections_are_skipped():
    faq = faq_entries(MARKDOWN, "help/faq.md")
    assert faq.schema == {"faq_id": pl.String, "question": pl.String, "answer": pl.String}
    assert faq.to_dicts() == [
        {
            "faq_id": "where-is-my-order",
            "question": "Where is my order?",
            "answer": "Most orders arrive in 2-4 working days. See tracking "
            "(https://shop.example/track) for the latest scan.\n\n"
            "- Next-day orders arrive tomorrow.\n- Weekend orders ship on Monday.",
        },
        {
            "faq_id": "how-do-i-reset-my-password",
            "question": "How do I reset my password?",
            "answer": "Choose Forgot password? on the sign-in page.",
        },
        {
            "faq_id": "can-i-pay-with-paypal",
            "question": "Can I pay with PayPal?",
            "answer": "Yes, at checkout.",
        },
        {"faq_id": "do-you-take-klarna", "question": "Do you take Klarna?", "answer": "Not yet."},
    ]


def test_markdown_headings_in_code_fences_and_answer_markers_are_answer_text():
    content = "## Can I get a receipt?\n\n**A:** Yes:\n\n```\n# not a heading\n```\n"
    faq = faq_entries(content, "faq.MARKDOWN")
    assert faq["answer"].to_list() == ["Yes:\n\n# not a heading"]


def test_csv_columns_are_found_case_insensitively_and_extra_columns_ignored():
    content = (
        "\ufeffTags, Question ,ANSWER\n"
        'delivery,Where is my order?,"Most orders arrive in 2-4 days.\nTrack it online."\n'
        "\n"
        "account,Can't log in?,Reset your password.\n"
    )
    faq = faq_entries(content, "kb/faq.csv")
    assert faq.to_dicts() == [
        {
            "faq_id": "where-is-my-order",
            "question": "Where is my order?",
            "answer": "Most orders arrive in 2-4 days. Track it online.",
        },
        {"faq_id": "cant-log-in", "question": "Can't log in?", "answer": "Reset your password."},
    ]


def test_semicolon_separated_csv_is_read_too():
    faq = faq_entries("question;answer\nRefunds?;Within 5 days.\n", "faq.csv")
    assert faq["answer"].to_list() == ["Within 5 days."]


def test_faq_ids_are_unique_and_stable():
    content = "## Refunds?\nA.\n## Refunds!\nB.\n## ???\nC.\n## Café opening hours\nD.\n"
    ids = faq_entries(content, "faq.md")["faq_id"].to_list()
    assert ids[:2] == ["refunds", "refunds-2"]
    assert ids[2].startswith("faq-") and ids[3] == "cafe-opening-hours"
    assert faq_entries(content, "faq.md")["faq_id"].to_list() == ids


BAD_INPUTS = [
    ("question,a\nHi?,Hello\n", "faq.csv", "missing column 'answer' (found: question, a)"),
    ("q,a\nHi?,Hello\n", "faq.csv", "missing columns 'question', 'answer' (found: q, a)"),
    ("question,answer\nHi?,Hello\nBye?,\n", "faq.csv", "line 3: empty answer (expected"),
    ('question,answer\n"Hi?\nthere",Hello\n,x\n', "faq.csv", "line 4: empty question"),
    ("question,answer\n", "faq.csv", "no questions found (expected a header row"),
    ("", "faq.csv", "no questions found"),
    ("Just some text.\n", "faq.md", "no questions found (expected '## Question' headings"),
    ("# FAQ\n", "faq.md", "no questions found"),
    ("# FAQ\n## Hi?\nHello\n## Bye?\n\n", "faq.md", "line 4: question 'Bye?' has an empty"),
    ("## Hi?\n<!-- todo -->\n## Bye?\nOk\n", "faq.md", "line 1: question 'Hi?' has an empty"),
    ("**Q:** Hi?\n\n", "faq.md", "line 1: question 'Hi?' has no answer (expected an '**A:**"),
    ("A: yes\n## Hi?\nHello\n", "faq.md", "line 1: an answer before any question"),
    ("## Hi?\nA\n## hi?\nB\n", "faq.md", "line 3: duplicate question 'hi?' (first at line 1)"),
    ("Hi?,Hello\n", "faq.txt", "unsupported knowledge-base format '.txt' (expected a .md"),
]


@pytest.mark.parametrize(("content", "name", "message"), BAD_INPUTS)
def test_bad_knowledge_bases_raise_naming_the_file_and_what_was_expected(content, name, message):
    with pytest.raises(ValueError) as error:
        faq_entries(content, name)
    assert str(error.value).startswith(f"{name}: {message}")


def test_the_example_faq_parses():
    faq = faq_entries((REPO / "nightowl" / "demo" / "demo_faq.md").read_text(), "faq.md")
    assert 10 <= faq.height <= 15
    assert faq["faq_id"].is_unique().all()
    assert faq["answer"].str.len_chars().min() > 80


# --- suggested_answers --------------------------------------------------------------------------

TINY_FAQ = pl.DataFrame(
    {
        "faq_id": ["refund", "password", "delivery"],
        "question": ["When will I get my refund?", "I forgot my password", "Where is my parcel?"],
        "answer": [
            "Refunds reach your card within 5 working days of your return arriving.",
            "Use the reset link on the sign-in page; check your spam folder for the email.",
            "Track the parcel with the courier link in your dispatch email.",
        ],
    }
)


def tickets_of(*texts: str | None, titles: list[str | None] | None = None) -> pl.DataFrame:
    frame = pl.DataFrame(
        {"feedback_id": [f"f{k}" for k in range(len(texts))], "text": list(texts)},
        schema={"feedback_id": pl.String, "text": pl.String},
    )
    return frame if titles is None else frame.with_columns(title=pl.Series(titles, dtype=pl.String))


def test_the_right_entry_wins_and_unrelated_or_empty_tickets_get_none():
    tickets = tickets_of(
        "I returned the shoes and have not been refunded yet.",
        "<p>The password reset EMAIL never arrived</p>",
        "Do you sell gift wrapping for birthdays?",
        "",
        None,
        "Please help.",
        titles=[None, None, None, "Refund", None, "Where is my parcel"],
    )
    out = suggested_answers(tickets, TINY_FAQ)
    assert out.columns == [
        "feedback_id", "faq_id", "faq_question", "suggested_answer", "answer_similarity",
    ]  # fmt: skip
    assert out["feedback_id"].to_list() == tickets["feedback_id"].to_list()
    assert out["faq_id"].to_list() == ["refund", "password", None, None, None, "delivery"]
    assert out["faq_question"][0] == "When will I get my refund?"
    assert out["suggested_answer"][1].startswith("Use the reset link")
    similarity = out["answer_similarity"]
    assert similarity.dtype == pl.Float64 and similarity.null_count() == 0
    assert 0.0 <= similarity[2] < 0.2 <= similarity[0] <= 1.0
    assert similarity[3] == 0.0 and similarity[4] == 0.0  # the title alone is not enough


def test_the_threshold_only_hides_the_suggestion_not_the_similarity():
    tickets = tickets_of("I returned the shoes and have not been refunded yet.")
    shown, hidden = (suggested_answers(tickets, TINY_FAQ, t) for t in (0.0, 0.99))
    assert shown["faq_id"][0] == "refund" and hidden["faq_id"][0] is None
    assert hidden["suggested_answer"][0] is None
    assert hidden["answer_similarity"][0] == shown["answer_similarity"][0]


def test_an_empty_faq_gives_null_suggestions_and_null_similarity():
    out = suggested_answers(tickets_of("Where is my refund?", "Hi"), TINY_FAQ.clear())
    assert out["feedback_id"].to_list() == ["f0", "f1"]
    assert out.schema["answer_similarity"] == pl.Float64
    assert out.drop("feedback_id").null_count().row(0) == (2, 2, 2, 2)


def test_no_tickets_gives_an_empty_frame():
    out = suggested_answers(tickets_of(), TINY_FAQ)
    assert out.height == 0 and out.schema["answer_similarity"] == pl.Float64


# --- generated tickets ---------------------------------------------------------------------------

# The FAQ entries of examples/faq.md that answer each generated ticket topic.
ON_TOPIC = {
    "delivery": {
        "my-order-is-late-or-hasnt-arrived-yet-where-is-it",
        "how-do-i-track-my-parcel",
        "the-tracking-says-delivered-but-i-cant-find-my-parcel",
        "can-i-change-my-delivery-date-address-or-courier-slot",
    },
    "refund": {"when-will-i-get-my-refund", "how-do-i-return-an-item"},
    "payment": {
        "ive-been-charged-twice-or-there-is-a-charge-i-dont-recognise",
        "my-payment-failed-or-my-card-was-declined",
        "why-isnt-my-discount-code-working",
        "can-i-change-or-cancel-my-order",
    },
    "login_app": {
        "i-cant-log-in-or-the-password-reset-email-never-arrives",
        "the-app-keeps-crashing-or-logging-me-out",
    },
    "size_fit": {"the-item-doesnt-fit-can-i-exchange-it-for-a-different-size"},
    "damaged": {"my-item-arrived-damaged-broken-or-faulty"},
}
FEEDBACK_SCHEMA = {
    "feedback_id": pl.String, "user_id": pl.String, "item_id": pl.String, "rating": pl.Int64,
    "title": pl.String, "text": pl.String, "channel": pl.String, "created_at": pl.String,
}  # fmt: skip


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> pl.DataFrame:
    """Support tickets of a small generated shop (about 135 over 40 days), with true labels."""
    out = tmp_path_factory.mktemp("shop")
    generate_landing(out, users=3000, items=20, days=40, end_date=date(2026, 11, 27))
    feedback = pl.read_ndjson(sorted((out / "feedback").glob("*.jsonl")), schema=FEEDBACK_SCHEMA)
    truth = pl.read_parquet(out / "_truth" / "feedback_labels.parquet")
    return (
        feedback.filter(pl.col("channel") == "support")
        .with_columns(pl.col("created_at").str.to_datetime(time_zone="UTC"))
        .join(truth.select("feedback_id", "topic", "urgent"), on="feedback_id")
    )


def test_generated_tickets_get_on_topic_answers_from_the_example_faq(generated):
    assert generated.height >= 100
    faq = faq_entries((REPO / "nightowl" / "demo" / "demo_faq.md").read_text(), "faq.md")
    assert set().union(*ON_TOPIC.values()) <= set(faq["faq_id"])
    # the generator blanks a few texts on purpose; those cannot be answered
    answerable = generated.filter(pl.col("text").str.strip_chars() != "")
    out = suggested_answers(answerable, faq)
    hits = [f in ON_TOPIC[t] for t, f in zip(answerable["topic"], out["faq_id"], strict=True)]
    assert np.mean(hits) >= 0.8  # 0.95 when written


def test_urgency_ranks_truly_urgent_generated_tickets_higher(generated):
    history = generated.select("user_id", "created_at")
    no_model = urgency_scores(generated.with_columns(negativity=None), history)
    assert roc_auc_score(generated["urgent"], no_model["urgency"]) >= 0.8  # 0.97 when written
    # an uninformative sentiment model adds noise but must not wreck the ranking
    noise = np.random.default_rng(0).random(generated.height)
    noisy = urgency_scores(generated.with_columns(negativity=noise), history)
    assert roc_auc_score(generated["urgent"], noisy["urgency"]) >= 0.8


@pytest.mark.parametrize("phrase", URGENCY_PHRASES + PAYMENT_URGENCY_PHRASES)
def test_the_generators_urgency_phrases_are_urgent_wording(phrase):
    assert "urgent wording" in _reasons(f"My parcel is late. {phrase}")[0]


@pytest.mark.parametrize(
    "text",
    [
        "I need this ASAP.",
        "Please refund me immediately.",
        "No reply to my last 3 emails.",
        "Nobody has replied to me.",
        "I have emailed you four times already",
        "This is the 4th time I write.",
        "Frankly this is unacceptable.",
        "I will file a chargeback with my bank.",
        "I was double-charged for one order",
        "Where is my order??!!",
    ],
)
def test_general_urgent_wording_is_recognised(text):
    assert "urgent wording" in _reasons(text)[0]


def test_calm_ticket_bodies_are_not_urgent_wording():
    bodies = [b.replace("{p}", "lamp") for topic in SUPPORT_BODIES for b in topic]
    for text in bodies + [c for c in SUPPORT_CLOSERS if c]:
        assert not any("urgent wording" in r for r in _reasons(text)), text


def _reasons(text: str) -> list[str]:
    tickets = pl.DataFrame(
        {"feedback_id": ["f"], "user_id": ["u"], "created_at": [T0], "text": [text]}
    )
    return urgency_scores(tickets, tickets.select("user_id", "created_at"))["urgency_reasons"][0]


# --- urgency_scores -----------------------------------------------------------------------------


def ticket_frame(rows: list[tuple[str | None, datetime, str, float | None]]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "feedback_id": [f"f{k}" for k in range(len(rows))],
            "user_id": [r[0] for r in rows],
            "created_at": [r[1] for r in rows],
            "text": [r[2] for r in rows],
            "negativity": [r[3] for r in rows],
        },
        schema={
            "feedback_id": pl.String,
            "user_id": pl.String,
            "created_at": pl.Datetime("us", "UTC"),
            "text": pl.String,
            "negativity": pl.Float64,
        },
    )


def history_frame(rows: list[tuple[str | None, datetime]]) -> pl.DataFrame:
    return pl.DataFrame(
        {"user_id": [r[0] for r in rows], "created_at": [r[1] for r in rows]},
        schema={"user_id": pl.String, "created_at": pl.Datetime("us", "UTC")},
    )


def test_repeat_contacts_count_the_window_up_to_and_including_the_ticket():
    tickets = ticket_frame([(u, T0, "Hello", None) for u in ("a", "b", "c", "d")])
    earlier = history_frame(
        [
            ("a", T0 - timedelta(days=14)),  # day 14: in
            ("a", T0 - timedelta(days=3)),
            ("a", T0 + timedelta(days=1)),  # after the ticket: not yet a contact
            ("b", T0 - timedelta(days=15)),  # day 15: out
            ("c", T0 - timedelta(days=14, seconds=1)),  # just before the window
            ("d", T0 - timedelta(days=13, hours=23)),
        ]
    )
    for history in (earlier, pl.concat([earlier, tickets.select("user_id", "created_at")])):
        out = urgency_scores(tickets, history)
        assert out["repeat_contacts"].to_list() == [3, 1, 1, 2]
    reasons = out["urgency_reasons"].to_list()
    assert reasons[0] == ["3rd contact in 14 days"] and reasons[3] == ["2nd contact in 14 days"]
    assert reasons[1] == []
    assert out["urgency"].to_list() == pytest.approx([REPEAT_WEIGHT, 0.0, 0.0, REPEAT_WEIGHT / 2])
    wider = urgency_scores(tickets, earlier, repeat_window_days=15)
    assert wider["repeat_contacts"].to_list() == [3, 2, 2, 2]
    assert wider["urgency_reasons"][1].to_list() == ["2nd contact in 15 days"]


def test_tickets_in_the_same_batch_count_each_other_in_time_order():
    tickets = ticket_frame([("a", T0 + timedelta(hours=h), "Hi", None) for h in (5, 0, 9)])
    out = urgency_scores(tickets, history_frame([]))
    assert out["repeat_contacts"].to_list() == [2, 1, 3]


def test_a_ticket_without_user_has_no_repeat_count_and_is_not_high_value():
    tickets = ticket_frame([(None, T0, "Hi", None), ("a", T0, "Hi", None)])
    history = history_frame([(None, T0 - timedelta(days=1)), ("a", T0 - timedelta(days=1))])
    vip = pl.DataFrame({"user_id": [None, "a"]}, schema={"user_id": pl.String})
    out = urgency_scores(tickets, history, high_value_users=vip)
    assert out["repeat_contacts"].to_list() == [None, 2]
    assert out.schema["repeat_contacts"] == pl.Int64
    assert out["urgency_reasons"].to_list() == [
        [], ["2nd contact in 14 days", "high-value customer"],
    ]  # fmt: skip
    assert out["urgency"][0] == 0.0


def test_high_value_customers_get_the_high_value_weight():
    tickets = ticket_frame([("vip", T0, "Hi", 0.3), ("other", T0, "Hi", 0.3)])
    vip = pl.DataFrame({"user_id": ["vip"]})
    out = urgency_scores(tickets, history_frame([]), high_value_users=vip)
    assert out["urgency"][0] - out["urgency"][1] == pytest.approx(HIGH_VALUE_WEIGHT)
    assert out["urgency_reasons"].to_list() == [["high-value customer"], []]
    assert urgency_scores(tickets, history_frame([]))["urgency"][0] == out["urgency"][1]


def test_all_components_add_up_to_at_most_one_with_reasons():
    tickets = ticket_frame(
        [
            ("a", T0, "URGENT: you charged me twice for my order!", 1.0),
            ("b", T0, "Love the new app design.", 0.1),
        ]
    )
    history = history_frame([("a", T0 - timedelta(days=d)) for d in (1, 2)])
    out = urgency_scores(tickets, history, high_value_users=pl.DataFrame({"user_id": ["a"]}))
    assert out.columns == ["feedback_id", "urgency", "urgency_reasons", "repeat_contacts"]
    assert out["urgency"][0] == pytest.approx(1.0)
    assert out["urgency"][1] == pytest.approx(NEGATIVITY_WEIGHT * 0.1)
    assert out["urgency_reasons"][0].to_list() == [
        'urgent wording ("urgent")', "negative tone", "3rd contact in 14 days",
        "order/payment problem", "high-value customer",
    ]  # fmt: skip
    weights = (
        URGENT_WORDING_WEIGHT, NEGATIVITY_WEIGHT, REPEAT_WEIGHT, ORDER_PAYMENT_WEIGHT,
        HIGH_VALUE_WEIGHT,
    )  # fmt: skip
    assert sum(weights) == pytest.approx(1.0)


def test_no_tickets_gives_an_empty_urgency_frame():
    out = urgency_scores(ticket_frame([]), history_frame([]))
    assert out.height == 0
    assert out.schema == {
        "feedback_id": pl.String, "urgency": pl.Float64,
        "urgency_reasons": pl.List(pl.String), "repeat_contacts": pl.Int64,
    }  # fmt: skip


TEXTS = st.sampled_from(["", "Hi", "Where is my order? urgent", "refund ASAP!!", "Still waiting."])
USERS = st.sampled_from(["a", "b", "c", None])
DAYS = st.floats(0, 40, allow_nan=False)
NEGATIVITY = st.none() | st.floats(-1, 2) | st.just(float("nan"))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    tickets=st.lists(st.tuples(USERS, DAYS, TEXTS, NEGATIVITY), max_size=8),
    history=st.lists(st.tuples(USERS, DAYS), max_size=12),
    vip=st.lists(USERS, max_size=3),
)
def test_urgency_stays_in_unit_interval_and_repeat_counts_match_brute_force(tickets, history, vip):
    def at(day: float) -> datetime:
        return T0 + timedelta(seconds=round(day * 86400))

    frame = ticket_frame([(u, at(d), t, n) for u, d, t, n in tickets])
    past = history_frame([(u, at(d)) for u, d in history])
    out = urgency_scores(frame, past, high_value_users=pl.DataFrame({"user_id": vip}))
    assert out["feedback_id"].to_list() == frame["feedback_id"].to_list()
    assert out["urgency"].null_count() == 0
    assert all(0.0 <= u <= 1.0 for u in out["urgency"])
    contacts = {(u, at(d)) for u, d in history + [(u, d) for u, d, _, _ in tickets] if u}
    expected = [
        None
        if u is None
        else sum(1 for cu, ct in contacts if cu == u and at(d) - timedelta(14) <= ct <= at(d))
        for u, d, _, _ in tickets
    ]
    assert out["repeat_contacts"].to_list() == expected
