"""The sentiment model: labels, fitting, the ONNX graph and its parity, metrics, the lexicon."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nightowl.tasks.feedback import sentiment
from nightowl.tasks.models import score

GOOD = ["love it", "great value", "works great", "excellent and sturdy", "love the colour"]
BAD = ["broke fast", "terrible value", "awful, broke", "waste of money", "terrible smell"]
MIXED = ["it is ok", "fine I guess", "ok value"]


@pytest.fixture(scope="module")
def corpus() -> tuple[pl.Series, pl.Series]:
    texts = (GOOD + BAD + MIXED) * 8
    labels = ([1.0] * len(GOOD) + [0.0] * len(BAD) + [None] * len(MIXED)) * 8
    return pl.Series(texts), pl.Series(labels, dtype=pl.Float64)


@pytest.fixture(scope="module")
def model(corpus) -> sentiment.SentimentModel:
    return sentiment.fit_sentiment(*corpus, min_df=1, c_grid=(1.0, 10.0))


@pytest.fixture(scope="module")
def sess(model):
    return score.session(sentiment.onnx_from_model(model), [score.CPU])


def test_rating_and_score_labels():
    frame = pl.DataFrame({"r": [1, 2, 3, 4, 5, None], "s": [0.1, 0.39, 0.4, 0.59, 0.6, None]})
    out = frame.select(
        sentiment.rating_labels(pl.col("r")).alias("r"),
        sentiment.sentiment_labels(pl.col("s"), 0.4, 0.6).alias("s"),
    )
    assert out["r"].to_list() == ["negative"] * 2 + ["neutral", "positive", "positive", None]
    assert out["s"].to_list() == ["negative"] * 2 + ["neutral"] * 2 + ["positive", None]


def test_the_model_separates_and_places_a_neutral_band(model):
    texts = pl.Series(["love it, great", "terrible, broke", "it is ok"])
    p = sentiment.native_scores(model, texts)
    assert p[0] > 0.5 > p[1]
    assert model.negative_below <= model.positive_from
    assert model.params["C"] in (1.0, 10.0) and model.params["terms"] > 10


def test_onnx_matches_the_fitted_model_on_seen_unseen_and_edge_texts(model, sess):
    texts = pl.Series(
        [*GOOD, *BAD, "", None, "😍😍", "zzz qqq", "great " * 500, "très bien 非常好", "love"]
    )
    onnx = sentiment.onnx_scores(sess, texts, batch_docs=4)
    native = sentiment.native_scores(model, texts)
    assert sentiment.max_abs_diff(onnx, native) < 1e-6
    # Text with no known term scores the intercept alone: every such text alike.
    assert onnx[11] == pytest.approx(onnx[13], abs=1e-7) == pytest.approx(onnx[12], abs=1e-7)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.sampled_from(["love", "great", "broke", "awful", "ok", "box", "!"]), max_size=9))
def test_onnx_parity_holds_for_any_mix_of_words(model, sess, words):
    texts = pl.Series([" ".join(words), " ".join(reversed(words))])
    diff = sentiment.max_abs_diff(
        sentiment.onnx_scores(sess, texts), sentiment.native_scores(model, texts)
    )
    assert diff < 1e-6


def test_one_sentiment_only_is_refused():
    with pytest.raises(ValueError, match="both positive and negative"):
        sentiment.fit_sentiment(pl.Series(["good", "fine"] * 5), pl.Series([1.0, 1.0] * 5))


def test_padded_terms_put_each_document_on_its_row_in_index_order():
    known = pl.DataFrame(
        {"doc": [0, 2, 0], "col": [5, 1, 3], "count": [1.0, 3.0, 2.0]},
        schema_overrides={"count": pl.Float32},
    )
    index, values = sentiment.padded_terms(known, 3, pad=9)
    assert index.tolist() == [[3, 5], [9, 9], [1, 9]]
    assert values.tolist() == [[2.0, 1.0], [1.0, 1.0], [3.0, 1.0]]


def test_the_onnx_file_carries_its_vocabulary(model, sess):
    vocab = sentiment.vocabulary_index(sess)
    assert vocab["term"].to_list() == model.vocab.terms and vocab["col"][0] == 0


def test_metrics_on_a_tiny_known_case():
    truth = pl.Series(["positive", "negative", "neutral", "positive", None])
    scores = np.array([0.9, 0.2, 0.5, 0.3, 0.7])
    m = sentiment.sentiment_metrics(truth, scores, 0.4, 0.6)
    # predicted: positive, negative, neutral, negative (the null truth is left out)
    assert m["accuracy"] == 0.75 and m["rows"] == 4
    assert m["roc_auc"] == 1.0  # both positives above the one negative
    assert 0 < m["macro_f1"] < 1


def test_the_lexicon_reads_polarity_and_calls_nothing_neutral():
    p = sentiment.lexicon_scores(pl.Series(["I love it!", "This is terrible.", ""]))
    assert p[0] > 0.525 and p[1] < 0.475 and p[2] == 0.5


def _polar_f1(scores: np.ndarray, truth: np.ndarray, band: tuple[float, float]) -> float:
    from sklearn.metrics import f1_score

    pred = np.where(scores < band[0], 0, np.where(scores >= band[1], 2, 1))
    polar = truth != 1
    return f1_score(truth[polar], pred[polar], average="macro", labels=[0, 2], zero_division=0)


def test_the_neutral_band_never_costs_the_clearly_rated_texts():
    # Clear texts score near 0.35 and 0.65 (right side of 0.5); neutral ones spread in between.
    # A band from 0.3 to 0.7 would win every neutral text and lose every clear one.
    truth = np.array([0] * 40 + [2] * 40 + [1] * 60)
    scores = np.concatenate([np.full(40, 0.36), np.full(40, 0.66), np.linspace(0.31, 0.69, 60)])
    band = sentiment.neutral_band(scores, truth)
    assert _polar_f1(scores, truth, band) >= _polar_f1(scores, truth, (0.5, 0.5))
    assert band[0] > 0.36 and band[1] <= 0.66


def test_a_neutral_band_is_kept_where_it_takes_the_misses_of_a_single_cut():
    # Near 0.5 the clear texts are as often wrong as right: labelling them neutral there costs
    # nothing, and wins the neutral texts that sit there too.
    truth = np.array([0] * 30 + [2] * 30 + [0, 2] * 10 + [1] * 30)
    scores = np.concatenate(
        [np.full(30, 0.1), np.full(30, 0.9), np.tile([0.52, 0.48], 10), np.full(30, 0.5)]
    )
    band = sentiment.neutral_band(scores, truth)
    assert band[0] < 0.48 and band[1] > 0.52
    assert _polar_f1(scores, truth, band) >= _polar_f1(scores, truth, (0.5, 0.5))


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 1), st.sampled_from([0, 1, 2])), min_size=3, max_size=60))
def test_macro_f1_is_scikit_learns(rows):
    from sklearn.metrics import f1_score

    truth = np.array([r[1] for r in rows])
    pred = np.where(np.array([r[0] for r in rows]) < 0.4, 0, 2)
    expected = f1_score(truth, pred, average="macro", labels=[0, 1, 2], zero_division=0)
    assert sentiment.macro_f1(truth, pred, (0, 1, 2)) == pytest.approx(expected)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 1), st.sampled_from([0, 1, 2])), min_size=3, max_size=60))
def test_any_band_chosen_keeps_the_clear_texts_macro_f1(rows):
    scores = np.array([r[0] for r in rows])
    truth = np.array([r[1] for r in rows])
    band = sentiment.neutral_band(scores, truth)
    assert band[0] <= band[1]
    if (truth != 1).any():
        assert _polar_f1(scores, truth, band) >= _polar_f1(scores, truth, (0.5, 0.5)) - 1e-9
