"""Sentiment training, feedback_scores, product_sentiment and support_queue on a real (small)
warehouse of demo data."""

from __future__ import annotations

import shutil
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
from sklearn.metrics import roc_auc_score

from nightowl.demo.generate import generate_landing
from nightowl.errors import NotEnoughHistory
from nightowl.schemas.config import FeedbackSettings
from nightowl.schemas.landing import SOURCES
from nightowl.schemas.sources import SourceConfig
from nightowl.tasks.behaviour.units import ParityFailed
from nightowl.tasks.feedback import sentiment
from nightowl.tasks.feedback import units as feedback
from nightowl.tasks.ingest import units
from nightowl.warehouse.registry import Registry
from nightowl.warehouse.store import Warehouse

END = date(2026, 11, 27)
AS_OF = END + timedelta(days=1)
CFG = FeedbackSettings(min_labelled=100, c_grid=[1.0, 10.0])


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("feedback") / "data"
    generate_landing(root / "landing", users=2500, items=150, days=45, seed=3, end_date=END)
    wh = Warehouse(root, "test")
    for source in SOURCES:
        units.ingest_source(wh, source, SourceConfig(), END, root)
        units.clean_source(wh, source, SourceConfig(), END, 2.0, feedback=CFG)
    return root


@pytest.fixture
def wh(built: Path, tmp_path: Path) -> Warehouse:
    """A private copy of the built warehouse, so tests may register and promote freely."""
    root = tmp_path / "data"
    shutil.copytree(built, root)
    return Warehouse(root, "test")


@pytest.fixture
def tables(wh: Warehouse) -> dict[str, pl.DataFrame]:
    """The three feedback tables after one training, as the nightly flow makes them."""
    feedback.train_sentiment(wh, END, CFG)
    scores = feedback.feedback_scores_table(wh, AS_OF, CFG)
    feedback.product_sentiment_table(wh, AS_OF, CFG, scores)
    feedback.support_queue_table(wh, AS_OF, CFG, scores, str(wh.data_root))
    part = [{"as_of": AS_OF.isoformat()}]
    return {
        t: wh.scan("predictions", t, part).collect()
        for t in ("feedback_scores", "product_sentiment", "support_queue")
    }


def test_training_registers_a_parity_checked_model_that_beats_the_lexicon(wh):
    report = feedback.train_sentiment(wh, END, CFG)
    assert report.trained and report.promoted and report.parity_max_diff < 1e-5
    model, lexicon = report.metrics["model"], report.metrics["lexicon"]
    assert model["macro_f1"] > lexicon["macro_f1"] and model["roc_auc"] > lexicon["roc_auc"]
    registry = Registry(wh)
    card = registry.card(feedback.MODEL, report.version)
    assert card.metrics == report.metrics and card.parity["max_abs_diff"] == report.parity_max_diff
    assert card.training["fit_until"] < card.training["holdout_from"]  # a time split
    assert (registry.version_dir(feedback.MODEL, report.version) / "model.json").exists()
    assert feedback.training_due(wh, END, CFG) is None
    assert "days old" in feedback.training_due(wh, END + timedelta(days=7), CFG)
    again = feedback.train_sentiment(wh, END, CFG)  # same data and code: the same version
    assert again.version == report.version and "same model" in again.reason
    assert report.guard is not None and report.guard["beats"] and card.serves_rule is None


def test_labels_that_do_not_beat_the_lexicon_leave_scoring_to_it(wh):
    rules_only = CFG.model_copy(update={"rule_margin": 1.0})
    report = feedback.train_sentiment(wh, END, rules_only)
    assert report.guard is not None and not report.guard["beats"]
    assert report.guard["rule"] == "lexicon"
    assert "it serves the simple rule lexicon" in report.reason
    scored = feedback.feedback_scores_table(wh, AS_OF, rules_only)
    table = wh.scan("predictions", "feedback_scores", [{"as_of": AS_OF.isoformat()}]).collect()
    version = f"rule:{feedback.lexicon_version()}@{report.version}"
    assert scored.model_version == version and set(table["model_version"]) == {version}
    assert set(table["sentiment_source"]) <= {"lexicon", "rating"}


def test_a_date_before_every_model_s_data_makes_training_due_for_it(wh):
    # A backfill of days before the first model: none may serve them, so one is trained.
    newer = feedback.train_sentiment(wh, END, CFG)
    earlier = END - timedelta(days=3)
    assert "every sentiment model saw data after" in feedback.training_due(wh, earlier, CFG)
    older = feedback.train_sentiment(wh, earlier, CFG)
    assert older.trained and not older.promoted  # the newer champion stays
    assert Registry(wh).champion(feedback.MODEL).version == newer.version
    assert feedback.training_due(wh, earlier, CFG) is None
    serving = feedback.scoring_model(Registry(wh), earlier + timedelta(days=1))
    assert serving.version == older.version


def test_a_champion_that_saw_the_held_out_window_is_kept(wh):
    first = feedback.train_sentiment(wh, END, CFG)
    earlier = feedback.train_sentiment(wh, END - timedelta(days=3), CFG)
    assert not earlier.promoted and "inside this model's held-out window" in earlier.reason
    assert Registry(wh).champion(feedback.MODEL).version == first.version


def test_too_few_ratings_leave_scoring_to_the_lexicon(wh):
    few = CFG.model_copy(update={"min_labelled": 10**6})
    with pytest.raises(NotEnoughHistory, match="VADER lexicon"):
        feedback.train_sentiment(wh, END, few)
    report = feedback.feedback_scores_table(wh, AS_OF, few)
    assert (
        report.model_version.startswith("vader-") and report.notes["sentiment_source"] == "lexicon"
    )
    scores = wh.scan("predictions", "feedback_scores", [{"as_of": AS_OF.isoformat()}]).collect()
    assert set(scores["sentiment_source"]) <= {"lexicon", "rating"}
    assert scores["sentiment_score"].null_count() == 0


def test_a_failed_parity_gate_registers_nothing(wh, monkeypatch):
    monkeypatch.setattr(sentiment, "max_abs_diff", lambda a, b: 1.0)
    with pytest.raises(ParityFailed, match="not registered"):
        feedback.train_sentiment(wh, END, CFG)
    assert Registry(wh).versions(feedback.MODEL) == []


def test_feedback_scores_cover_the_window_and_agree_with_ratings(wh, tables):
    scores = tables["feedback_scores"]
    clean = wh.scan("clean", "feedback", [m.partition for m in wh.manifests("clean", "feedback")])
    assert scores.height == clean.collect().height  # 45 days < history_days: every item
    assert scores["feedback_id"].is_unique().all()
    assert scores["sentiment_score"].is_between(0, 1).all()
    rated = scores.filter(pl.col("rating").is_not_null() & (pl.col("rating") != 3))
    truth = rated.select(sentiment.rating_labels(pl.col("rating"))).to_series()
    agree = (rated["sentiment_label"] == truth).mean()
    assert agree > 0.9
    assert set(scores["model_version"]) == {Registry(wh).champion(feedback.MODEL).version}
    assert scores.filter(pl.col("text") == "")["sentiment_source"].to_list() == ["rating"] * (
        scores.filter(pl.col("text") == "").height
    )


def test_no_planted_contact_detail_reaches_an_output_table(wh, tables):
    planted = pl.read_parquet(wh.data_root / "landing" / "_truth" / "planted_pii.parquet")
    assert planted.height > 5
    for name, table in tables.items():
        for column, dtype in table.schema.items():
            if dtype == pl.String:
                values = table[column].drop_nulls()
                leaked = [v for v in planted["value"] if values.str.contains(v, literal=True).any()]
                assert not leaked, (name, column, leaked[:3])
    scores = tables["feedback_scores"].join(planted, on="feedback_id")
    assert scores.height == planted.height
    assert (scores["pii"].list.len() > 0).all()  # each says what it had


def test_product_sentiment_reconciles_with_the_scores(tables):
    scores, products = tables["feedback_scores"], tables["product_sentiment"]
    day = END
    items = products.filter((pl.col("level") == "item") & (pl.col("day") == day))
    expected = scores.filter(
        pl.col("item_id").is_not_null() & (pl.col("created_at").dt.date() == day)
    )
    assert items["feedback"].sum() == expected.height > 0
    categories = products.filter((pl.col("level") == "category") & (pl.col("day") == day))
    assert (
        categories["feedback"].sum()
        == items.filter(pl.col("category").is_not_null())["feedback"].sum()
    )
    assert products["negative_share"].is_between(0, 1).all()
    assert products["day"].min() >= AS_OF - timedelta(days=CFG.window_days)
    complained = products.filter(pl.col("top_complaints").list.len() > 0)
    assert complained.height > 0
    assert complained["top_complaints"].list.len().max() <= CFG.top_complaints


def test_the_support_queue_ranks_urgent_tickets_first_with_answers(wh, tables):
    queue = tables["support_queue"]
    since = datetime(2026, 11, 21, tzinfo=UTC)  # AS_OF minus queue_days
    assert queue.height > 10 and (queue["created_at"] >= since).all()
    assert queue["rank"].to_list() == list(range(1, queue.height + 1))
    assert queue["urgency"].is_sorted(descending=True)
    truth = pl.read_parquet(wh.data_root / "landing" / "_truth" / "feedback_labels.parquet")
    judged = queue.join(truth, on="feedback_id")
    assert judged.height == queue.height
    assert roc_auc_score(judged["urgent"].to_numpy(), judged["urgency"].to_numpy()) > 0.8
    # The demo FAQ sits in landing/knowledge_base: most tickets get an answer.
    assert queue["suggested_answer"].is_not_null().mean() > 0.7
    shown = queue.filter(pl.col("suggested_answer").is_null())["answer_similarity"]
    assert (shown < CFG.min_answer_similarity).all()


def test_a_past_date_is_scored_by_a_model_trained_before_it(wh):
    early = feedback.train_sentiment(wh, END - timedelta(days=10), CFG)
    late = feedback.train_sentiment(wh, END, CFG)
    registry = Registry(wh)
    assert feedback.scoring_model(registry, AS_OF).version == registry.champion("sentiment").version
    past = feedback.scoring_model(registry, END - timedelta(days=5))
    assert past.version == early.version != late.version
    assert feedback.scoring_model(registry, END - timedelta(days=20)) is None  # the lexicon


def test_every_odd_text_gets_a_score_and_a_label():
    texts = ["", "😍😍", "Loved it! Really & truly", "Très bon, 非常好 👍", "word " * 1000, "ok"]
    frame = pl.DataFrame(
        {
            "feedback_id": [f"f{i}" for i in range(len(texts))],
            "created_at": [datetime(2026, 11, 27, tzinfo=UTC)] * len(texts),
            "user_id": None, "item_id": None, "channel": "review",
            "rating": [2, None, 5, 4, None, 3], "title": None, "text": texts,
            "pii": [[]] * len(texts), "text_chars": [len(t) for t in texts],
        },
        schema_overrides={"user_id": pl.String, "item_id": pl.String, "title": pl.String,
                          "pii": pl.List(pl.String)},
    )  # fmt: skip
    scores = sentiment.lexicon_scores(frame["text"])
    out = feedback.scored_feedback(
        frame, scores, sentiment.LEXICON_BAND, "lexicon", "vader-test", {"x": ["word"]}
    )
    assert out["sentiment_score"].null_count() == 0 and out["sentiment_label"].null_count() == 0
    assert out["sentiment_source"].to_list() == ["rating", *["lexicon"] * 5]
    assert out.row(0, named=True)["sentiment_label"] == "negative"  # 2 stars, no text
    assert out["aspects"].to_list()[4] == ["x"]


def test_nightowl_models_lists_sentiment_versions_beside_the_lexicon(wh):
    from typer.testing import CliRunner

    from nightowl.cli import app

    report = feedback.train_sentiment(wh, END, CFG)
    result = CliRunner().invoke(app, ["models", "--data-root", str(wh.data_root)])
    assert result.exit_code == 0, result.output
    assert "sentiment models" in result.output and "lexicon F1" in result.output
    assert f"champion: {report.version}" in result.output


def test_the_faq_comes_from_the_config_or_the_landing_knowledge_base(tmp_path):
    from nightowl.warehouse.landing import LandingError

    wh = Warehouse(tmp_path / "data", "test")
    assert feedback.faq_frame(wh, str(tmp_path), None).height == 0  # none anywhere: no answers
    assert feedback.faq_fingerprint(wh, str(tmp_path), None) == "none"
    (tmp_path / "kb.csv").write_text("Question,Answer\nWhere is my parcel?,Track it online.\n")
    faq = feedback.faq_frame(wh, str(tmp_path), "kb.csv")  # relative to the config's folder
    assert faq.select("question", "answer").row(0) == ("Where is my parcel?", "Track it online.")
    landing = tmp_path / "data" / "landing" / "knowledge_base"
    landing.mkdir(parents=True)
    (landing / "faq.md").write_text("# Help\n\n## How do I return?\n\nUse the returns page.\n")
    assert feedback.faq_frame(wh, str(tmp_path), None)["question"].to_list() == ["How do I return?"]
    with pytest.raises(LandingError, match=r"missing\.md: FAQ file not found"):
        feedback.faq_frame(wh, str(tmp_path), "missing.md")
    assert feedback.faq_fingerprint(wh, str(tmp_path), "missing.md") == "missing"


def test_complaints_reach_items_missing_from_the_catalogue():
    day = date(2026, 11, 26)
    scores = pl.LazyFrame(
        {
            "item_id": ["a", "a", "b", "b"],
            "created_at": [datetime(2026, 11, 26, 9, tzinfo=UTC)] * 4,
            "rating": [1, 1, 1, 1],
            "sentiment_score": [0.1, 0.2, 0.1, 0.2],
            "sentiment_label": ["negative"] * 4,
            "text": ["Arrived broken, awful"] * 4,
        }
    )
    items = pl.LazyFrame({"item_id": ["a"], "category": ["toys"]})
    out = feedback.product_sentiment(scores, items, [day], 3, 28).collect()
    by_item = {r["item_id"]: r for r in out.filter(pl.col("level") == "item").to_dicts()}
    assert by_item["a"]["category"] == "toys" and by_item["b"]["category"] is None
    assert "arrived broken" in by_item["b"]["top_complaints"]  # a null category hides nothing
    assert out.filter(pl.col("level") == "category")["feedback"].to_list() == [2]
    assert feedback.product_sentiment(scores, None, [day], 3, 28).collect().height == 2


def test_one_sided_ratings_leave_scoring_to_the_lexicon(wh):
    from nightowl.tasks.common.reads import clean_before

    frame, _ = clean_before(wh, "feedback", None)
    assert frame is not None
    cfg = CFG.model_copy(update={"holdout_share": 0.99})  # almost nothing left to learn from
    with pytest.raises(NotEnoughHistory, match=r"positive .* negative .* at least 10 of each"):
        feedback.train_sentiment(wh, END, cfg)
