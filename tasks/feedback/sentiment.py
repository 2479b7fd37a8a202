"""Sentiment: a TF-IDF logistic regression trained on the user's own ratings, run as ONNX.

Terms (words and two-word phrases) come from ``tasks.text.term_counts``, the same Polars code at
training and scoring time, and are looked up in the vocabulary there (a join). The ONNX graph
holds the rest — IDF weights, the L2 normalisation and the linear model — so scoring needs no
Python model code; the vocabulary travels in the same file, as the model's ``vocabulary``
metadata (a JSON list: a term's position is its index):

    term_index int64   [N, L]  a document's known terms as vocabulary indices, padded with V
    counts     float32 [N, L]  how often each occurs (padding: 1)
      → x = (1 + ln count) · idf[index];  score = x · w / ‖x‖ + b   (slot V: idf 0, weight 0)
      → probability float32 [N, 1] = sigmoid(score): how likely the text is positive

Integer indices rather than strings in the graph: a string tensor costs a Python string per cell
to build and a hash per cell to look up, which made scoring 2.2 times slower (bench/README.md).

The lexicon fallback is VADER (rule-based, English), used when there are too few ratings.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import onnx
import polars as pl
from onnx import TensorProto, helper
from scipy import sparse
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score, roc_auc_score
from sklearn.model_selection import StratifiedKFold

from nightowl.tasks.feedback.text import term_counts

TERMS, COUNTS, OUTPUT = "term_index", "counts", "probability"
#: The ONNX metadata key holding the vocabulary.
VOCABULARY = "vocabulary"
LABELS = ("negative", "neutral", "positive")
ONNX_OPSET = 17
LEXICON = "vader"


def rating_labels(rating: pl.Expr) -> pl.Expr:
    """The sentiment a rating states: 1-2 negative, 3 neutral, 4-5 positive (null: unrated)."""
    return (
        pl.when(rating <= 2)
        .then(pl.lit("negative"))
        .when(rating == 3)
        .then(pl.lit("neutral"))
        .when(rating >= 4)
        .then(pl.lit("positive"))
    )


def sentiment_labels(
    score: pl.Expr | pl.Series, negative_below: float, positive_from: float
) -> pl.Expr:
    """The label of a positive-probability ``score``: negative below ``negative_below``,
    positive from ``positive_from``, neutral between (null score: null label)."""
    return (
        pl.when(score < negative_below)
        .then(pl.lit("negative"))
        .when(score >= positive_from)
        .then(pl.lit("positive"))
        .when(score.is_not_null())
        .then(pl.lit("neutral"))
    )


@dataclass
class Vocabulary:
    """Terms kept for the model, each with its inverse document frequency."""

    terms: list[str]
    idf: np.ndarray

    @property
    def index(self) -> pl.DataFrame:
        return pl.DataFrame({"term": self.terms, "col": np.arange(len(self.terms), dtype=np.int64)})


def vocabulary(counts: pl.DataFrame, docs: int, min_df: int, max_terms: int) -> Vocabulary:
    """Terms in at least ``min_df`` documents (the ``max_terms`` most common), with the smoothed
    IDF ln((1 + docs) / (1 + df)) + 1."""
    df = (
        counts.group_by("term")
        .agg(pl.len().alias("df"))
        .filter(pl.col("df") >= min_df)
        .sort(["df", "term"], descending=[True, False])
        .head(max_terms)
        .sort("term")
    )
    idf = np.log((1 + docs) / (1 + df["df"].to_numpy())) + 1.0
    return Vocabulary(df["term"].to_list(), idf)


def tfidf_matrix(counts: pl.DataFrame, docs: int, vocab: Vocabulary) -> sparse.csr_matrix:
    """Rows of L2-normalised sublinear TF-IDF, one per document 0..docs-1."""
    known = counts.join(vocab.index, on="term")
    rows = known["doc"].to_numpy()
    cols = known["col"].to_numpy()
    values = (1.0 + np.log(known["count"].to_numpy().astype(np.float64))) * vocab.idf[cols]
    matrix = sparse.csr_matrix((values, (rows, cols)), shape=(docs, len(vocab.terms)))
    norms = np.sqrt(np.asarray(matrix.multiply(matrix).sum(axis=1)).ravel())
    return sparse.diags(1.0 / np.where(norms > 0, norms, 1.0)) @ matrix


@dataclass
class SentimentModel:
    """A fitted model: vocabulary, coefficients and the label thresholds."""

    vocab: Vocabulary
    coef: np.ndarray
    intercept: float
    negative_below: float
    positive_from: float
    params: dict[str, Any] = field(default_factory=dict)

    def predict(self, matrix: sparse.csr_matrix) -> np.ndarray:
        """Positive probability per row, in float64 (the native reference of the parity gate)."""
        return 1.0 / (1.0 + np.exp(-(matrix @ self.coef + self.intercept)))


def documents(texts: pl.Series) -> pl.DataFrame:
    """``texts`` as numbered documents (``doc``, ``text``); null texts are empty ones."""
    return pl.DataFrame({"doc": np.arange(len(texts), dtype=np.int64), "text": texts.fill_null("")})


def fit_sentiment(
    texts: pl.Series,
    labels: pl.Series,
    *,
    min_df: int = 2,
    max_terms: int = 200_000,
    c_grid: tuple[float, ...] = (1.0, 3.0, 10.0, 30.0),
    folds: int = 3,
    seed: int = 7,
) -> SentimentModel:
    """A logistic regression of positive (1) vs negative (0) on TF-IDF terms; neutral (null)
    labels only place the neutral band. C and the band come from cross-validation."""
    docs = documents(texts)
    counts = term_counts(docs)
    vocab = vocabulary(counts, len(docs), min_df, max_terms)
    x_all = tfidf_matrix(counts, len(docs), vocab)
    y_all = labels.to_numpy()
    polar = ~np.isnan(y_all.astype(np.float64))
    x, y = x_all[polar], y_all[polar].astype(np.int64)
    if len(np.unique(y)) < 2:
        raise ValueError("sentiment training needs both positive and negative ratings")

    folds = max(2, min(folds, int(np.bincount(y).min())))
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    splits = list(splitter.split(x, y))
    best_c, best_auc, oof = c_grid[0], -1.0, np.zeros(len(y))
    for c in c_grid:
        pred = np.zeros(len(y))
        for fit_idx, test_idx in splits:
            model = _logistic(c, seed).fit(x[fit_idx], y[fit_idx])
            pred[test_idx] = model.predict_proba(x[test_idx])[:, 1]
        auc = roc_auc_score(y, pred)
        if auc > best_auc:
            best_c, best_auc, oof = c, auc, pred
    final = _logistic(best_c, seed).fit(x, y)
    fitted = SentimentModel(vocab, final.coef_.ravel(), float(final.intercept_[0]), 0.5, 0.5)
    neutral = x_all[~polar]
    if neutral.shape[0]:  # place the band where it best separates the three labels
        scores = np.concatenate([oof, fitted.predict(neutral)])
        truth = np.concatenate([y * 2, np.ones(neutral.shape[0], np.int64)])
        fitted.negative_below, fitted.positive_from = neutral_band(scores, truth)
    fitted.params = {
        "C": best_c,
        "cv_roc_auc": round(best_auc, 6),
        "folds": folds,
        "min_df": min_df,
        "max_terms": max_terms,
        "terms": len(vocab.terms),
        "ngrams": [1, 2],
        "tf": "sublinear",
        "negative_below": fitted.negative_below,
        "positive_from": fitted.positive_from,
    }
    return fitted


def _logistic(c: float, seed: int) -> LogisticRegression:
    return LogisticRegression(C=c, max_iter=3000, random_state=seed)


def macro_f1(truth: np.ndarray, pred: np.ndarray, labels: tuple[int, ...]) -> float:
    """The mean F1 over ``labels`` (0 for a label neither true nor predicted), as scikit-learn's
    ``f1_score(average="macro", zero_division=0)``, at a fraction of its cost in a grid search."""
    scores = []
    for label in labels:
        said, true = pred == label, truth == label
        hits = int(np.sum(said & true))
        wrong = int(np.sum(said)) + int(np.sum(true)) - 2 * hits
        scores.append(2 * hits / (2 * hits + wrong) if hits or wrong else 0.0)
    return float(np.mean(scores))


def neutral_band(scores: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """Thresholds (negative below, positive from) maximising macro-F1 over negative (0), neutral
    (1) and positive (2) rows, among the bands that cost the clearly rated rows nothing: their
    macro-F1 (negative vs positive, a neutral label counted a miss) is at least what one cut at
    0.5 gives them. A band wide enough to win the neutral rows otherwise labels many plainly
    happy or unhappy customers neutral."""
    grid = np.round(np.arange(0.05, 0.96, 0.05), 2)
    polar = truth != 1

    def labels(lo: float, hi: float) -> np.ndarray:
        return np.where(scores < lo, 0, np.where(scores >= hi, 2, 1))

    def polar_f1(pred: np.ndarray) -> float:
        return macro_f1(truth[polar], pred[polar], (0, 2))

    floor = polar_f1(labels(0.5, 0.5)) - 1e-12
    best = (0.5, 0.5, -1.0)
    for lo in grid:
        for hi in grid[grid >= lo]:
            pred = labels(lo, hi)
            if polar.any() and polar_f1(pred) < floor:
                continue
            f1 = macro_f1(truth, pred, (0, 1, 2))
            if f1 > best[2] + 1e-12:
                best = (float(lo), float(hi), f1)
    return best[0], best[1]


def onnx_from_model(model: SentimentModel) -> bytes:
    """The ONNX graph (module docstring) that reproduces ``model`` from term indices and counts,
    with the vocabulary in its metadata."""
    n = len(model.vocab.terms)
    # Slot n is where padding lands: IDF 0, so it adds nothing.
    idf = np.append(model.vocab.idf, 0.0).astype(np.float32)
    weight = np.append(model.coef, 0.0).astype(np.float32)
    inits = [
        helper.make_tensor("idf", TensorProto.FLOAT, [n + 1], idf),
        helper.make_tensor("weight", TensorProto.FLOAT, [n + 1], weight),
        helper.make_tensor("one", TensorProto.FLOAT, [], [1.0]),
        helper.make_tensor("tiny", TensorProto.FLOAT, [], [1e-12]),
        helper.make_tensor("bias", TensorProto.FLOAT, [], [model.intercept]),
        helper.make_tensor("axis1", TensorProto.INT64, [1], [1]),
    ]
    nodes = [
        helper.make_node("Gather", ["idf", TERMS], ["idf_of"], name="idf_lookup"),
        helper.make_node("Gather", ["weight", TERMS], ["weight_of"], name="weight_lookup"),
        helper.make_node("Log", [COUNTS], ["log_count"]),
        helper.make_node("Add", ["log_count", "one"], ["tf"]),
        helper.make_node("Mul", ["tf", "idf_of"], ["x"]),
        helper.make_node("Mul", ["x", "x"], ["x2"]),
        helper.make_node("ReduceSum", ["x2", "axis1"], ["norm2"], keepdims=1),
        helper.make_node("Sqrt", ["norm2"], ["norm"]),
        helper.make_node("Max", ["norm", "tiny"], ["safe_norm"]),
        helper.make_node("Mul", ["x", "weight_of"], ["xw"]),
        helper.make_node("ReduceSum", ["xw", "axis1"], ["dot"], keepdims=1),
        helper.make_node("Div", ["dot", "safe_norm"], ["linear"]),
        helper.make_node("Add", ["linear", "bias"], ["logit"]),
        helper.make_node("Sigmoid", ["logit"], [OUTPUT], name="sigmoid"),
    ]
    graph = helper.make_graph(
        nodes,
        "sentiment",
        [
            helper.make_tensor_value_info(TERMS, TensorProto.INT64, ["N", "L"]),
            helper.make_tensor_value_info(COUNTS, TensorProto.FLOAT, ["N", "L"]),
        ],
        [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["N", 1])],
        inits,
    )
    onnx_model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", ONNX_OPSET)],
        producer_name="nightowl",
    )
    onnx_model.ir_version = 8  # what onnxruntime 1.31 reads for opset 17
    helper.set_model_props(onnx_model, {VOCABULARY: json.dumps(model.vocab.terms)})
    onnx.checker.check_model(onnx_model)
    return onnx_model.SerializeToString()


def vocabulary_index(sess: Any) -> pl.DataFrame:
    """The vocabulary an ONNX Runtime session's model carries: ``term`` and its ``col``."""
    meta = sess.get_modelmeta().custom_metadata_map
    if VOCABULARY not in meta:
        raise ValueError(
            "this sentiment model.onnx carries no 'vocabulary' metadata (it predates the "
            "vocabulary-index graph): train a new one with `nightowl train --model sentiment`"
        )
    terms = json.loads(meta[VOCABULARY])
    return pl.DataFrame(
        {"term": terms, "col": np.arange(len(terms), dtype=np.int64)},
        schema={"term": pl.String, "col": pl.Int64},
    )


def padded_terms(known: pl.DataFrame, docs: int, pad: int) -> tuple[np.ndarray, np.ndarray]:
    """``known`` (doc, col, count) as the ONNX inputs: [docs, L] indices and counts, padded
    with index ``pad`` and count 1."""
    placed = known.sort("doc", "col").with_columns(  # sorted: the sums' order is fixed
        pl.int_range(pl.len()).over("doc").alias("pos")
    )
    # Series.max() is typed as any Python scalar; "pos" is an integer column.
    width = max(1, int(cast(int, placed["pos"].max()) + 1) if placed.height else 1)
    index = np.full((docs, width), pad, dtype=np.int64)
    values = np.ones((docs, width), dtype=np.float32)
    rows, cols = placed["doc"].to_numpy(), placed["pos"].to_numpy()
    index[rows, cols] = placed["col"].to_numpy()
    values[rows, cols] = placed["count"].to_numpy()
    return index, values


def onnx_scores(sess: Any, texts: pl.Series, batch_docs: int = 4096) -> np.ndarray:
    """Positive probability of each text (null: empty text) from an ONNX Runtime session."""
    vocab = vocabulary_index(sess)
    out = np.empty(len(texts), dtype=np.float32)
    # Batches sorted by length pad little: a long review does not widen 4,095 short ones.
    order = np.argsort(texts.fill_null("").str.len_chars().to_numpy(), kind="stable")
    for start in range(0, len(texts), batch_docs):
        idx = order[start : start + batch_docs]
        known = term_counts(documents(texts.gather(idx))).join(vocab, on="term")
        index, values = padded_terms(known.select("doc", "col", "count"), len(idx), vocab.height)
        out[idx] = sess.run([OUTPUT], {TERMS: index, COUNTS: values})[0][:, 0]
    return out


def native_scores(model: SentimentModel, texts: pl.Series) -> np.ndarray:
    """Positive probability of each text from the fitted model itself (float64)."""
    docs = documents(texts)
    return model.predict(tfidf_matrix(term_counts(docs), len(docs), model.vocab))


def lexicon_scores(texts: pl.Series) -> np.ndarray:
    """VADER's compound polarity of each text mapped to [0, 1] (0.5: neutral or empty)."""
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    analyzer = SentimentIntensityAnalyzer()
    compound = [analyzer.polarity_scores(t)["compound"] if t else 0.0 for t in texts.to_list()]
    return (np.asarray(compound, dtype=np.float64) + 1.0) / 2.0


def reference_scores(texts: pl.Series, labels: pl.Series, scored: pl.Series) -> np.ndarray:
    """The textbook reference: scikit-learn's TF-IDF (words and pairs, sublinear counts) and a
    logistic regression with default regularisation, fitted on the positive (1) and negative
    (0) ``labels`` of ``texts``; the positive probability of each of ``scored``."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    polar = labels.is_not_null().to_numpy()
    vectoriser = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)
    x = vectoriser.fit_transform(texts.fill_null("").to_numpy()[polar])
    y = labels.to_numpy()[polar].astype(np.int64)
    model = LogisticRegression(max_iter=3000).fit(x, y)
    return model.predict_proba(vectoriser.transform(scored.fill_null("").to_numpy()))[:, 1]


#: VADER's own cut-offs (compound ±0.05), on the [0, 1] scale.
LEXICON_BAND = (0.475, 0.525)


def sentiment_metrics(
    truth: pl.Series, scores: np.ndarray, negative_below: float, positive_from: float
) -> dict[str, float | None]:
    """Accuracy and macro-F1 of the labels, and ROC-AUC of positive vs negative by score."""
    frame = pl.DataFrame({"truth": truth, "score": scores}).drop_nulls("truth")
    pred = frame.select(sentiment_labels(pl.col("score"), negative_below, positive_from))
    present = sorted(set(frame["truth"].to_list()))
    polar = frame.filter(pl.col("truth") != "neutral")
    y = (polar["truth"] == "positive").to_numpy()
    auc = roc_auc_score(y, polar["score"].to_numpy()) if 0 < y.sum() < len(y) else None
    labels_true, labels_pred = frame["truth"].to_list(), pred.to_series().to_list()
    clear = [i for i, t in enumerate(labels_true) if t != "neutral"]
    polar_f1 = f1_score(
        [labels_true[i] for i in clear],
        [labels_pred[i] for i in clear],
        average="macro",
        labels=[p for p in ("negative", "positive") if p in present],
        zero_division=0,
    )
    return {
        # The clearly rated texts (1-2, 4-5 stars) alone: a neutral label there is a miss.
        "polar_macro_f1": round(float(polar_f1), 6) if clear else None,
        "accuracy": round(float(accuracy_score(labels_true, labels_pred)), 6),
        "macro_f1": round(
            float(f1_score(labels_true, labels_pred, average="macro", labels=present)), 6
        ),
        "roc_auc": None if auc is None else round(float(auc), 6),
        "rows": float(frame.height),
    }


def max_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    """Largest absolute difference of two score vectors (0 for empty ones)."""
    return float(np.max(np.abs(a.astype(np.float64) - b))) if len(a) else 0.0
