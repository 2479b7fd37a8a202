"""Feedback benchmark: sentiment quality on real reviews, then 1M feedback texts scored end to end.

**Quality** (in this process, seconds once the model is cached): on the Amazon Fine Food sample in
``../shared/datasets/amazon_fine_foods_small`` (4,000 training and 1,000 test reviews, split as
given; "great" = 5 stars = positive, "other" = 1-4 stars = negative), every text is made plain
with ``tasks.text.plain_text`` (the reviews hold ``<br />``). nightowl's model
(``tasks.sentiment.fit_sentiment``, cached in ``bench/out/data``) scores the test reviews through
ONNX Runtime; beside it the VADER lexicon (``lexicon_scores`` with ``LEXICON_BAND``) and the
reference a data scientist would write first: scikit-learn's ``TfidfVectorizer(ngram_range=(1, 2))``
+ ``LogisticRegression()`` with default settings, positive when ``predict_proba >= 0.5``. All three
are judged by the same ``sentiment_metrics``.

**Throughput** (each side in its own process, timed inside it, see ``bench.common.run_worker``):
1M feedback rows resampled from the same reviews (HTML left in, a random word and number appended
so that few texts repeat, 2 % with a planted e-mail, phone or card number), cached as Parquet.
nightowl runs the nightly path chunk by chunk: ``tasks.clean.cleaned_feedback`` (plain text, PII
redaction, cap) → ``tasks.sentiment.onnx_scores`` (tokens, terms, ONNX Runtime) →
``tasks.feedback.scored_feedback`` (labels, aspects). The lexicon side makes the same texts plain
and scores them with VADER (no redaction). Timings never go in tests: this prints two tables and
writes ``bench/out/feedback-results.json``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.common import (
    DATA,
    OUT,
    REPO,
    code_version,
    disturbed,
    log,
    measured_cells,
    peak_rss_mib,
    run_worker,
    text_table,
    write_results,
)

RESULTS = OUT / "feedback-results.json"
DATASET = REPO.parent / "shared" / "datasets" / "amazon_fine_foods_small"
SEED = 20261201
THREADS = 2
#: The run date the feedback is cleaned for: every row is dated in the 30 days before its end.
RUN_DATE = date(2026, 11, 27)
DAYS = 30
#: Share of texts with a planted e-mail, phone or card number.
PII_SHARE = 0.02
PII_KINDS = ("email", "phone", "card")
#: Neutral words appended with a number to every resampled review, so that few texts repeat.
SUFFIX_WORDS = ("thanks", "cheers", "update", "overall", "regards", "note", "anyway", "also",
                "btw", "edit", "ps", "again", "today", "later", "still", "now")  # fmt: skip
CHANNELS = ("review", "survey", "support", "app_store")
CHANNEL_P = (0.80, 0.10, 0.06, 0.04)
#: Star ratings of "other" reviews (1-4 stars), roughly as in the full Amazon data set.
OTHER_STARS_P = (0.25, 0.14, 0.21, 0.40)
TITLES = {
    "great": ("Love it", "Great value", "Excellent", "Highly recommended", "Very happy"),
    "other": ("Disappointed", "Not as described", "Could be better", "Average", "Waste of money"),
}
#: The labels as ``label_codes`` numbers them.
LABEL_NAMES = ("negative", "neutral", "positive")
#: Code whose behaviour the figures describe (its sha256 goes in the results).
MEASURED = (
    "tasks/ingest/clean.py",
    "tasks/feedback/text.py",
    "tasks/feedback/redact.py",
    "tasks/feedback/sentiment.py",
    "tasks/feedback/units.py",
    "tasks/models/score.py",
)


def reviews(dataset: Path, split: str) -> Any:
    """One split of the Amazon sample (product, review, score)."""
    import polars as pl

    path = dataset / f"{split}.parquet"
    if not path.exists():
        raise SystemExit(f"{path} not found: the benchmark reads the shared Amazon sample")
    return pl.read_parquet(path)


def plain(texts: Any) -> Any:
    """``texts`` (a Series) through ``tasks.text.plain_text``, as the clean layer stores them."""
    import polars as pl

    from nightowl.tasks.feedback import text

    return pl.select(text.plain_text(pl.lit(texts))).to_series().alias(texts.name)


# ---- the model: fitted once on the training split, cached ----------------------------------------


def model_key(dataset: Path) -> str:
    """What the fitted model depends on: the training file and the code that fits it."""
    digest = hashlib.sha256((dataset / "training.parquet").read_bytes())
    for path in ("tasks/feedback/sentiment.py", "tasks/feedback/text.py"):
        digest.update((REPO / path).read_bytes())
    return digest.hexdigest()[:12]


def model_paths(dataset: Path) -> tuple[Path, Path]:
    key = model_key(dataset)
    return DATA / f"feedback-sentiment-{key}.onnx", DATA / f"feedback-sentiment-{key}.json"


def sentiment_model(dataset: Path) -> tuple[Any, bytes, dict[str, Any]]:
    """nightowl's sentiment model fitted on the plain training reviews (great = 1, other = 0),
    its ONNX bytes and what the fit recorded (params, seconds); cached, since the fit (a 4 x 3
    cross-validation grid) takes about a minute on 2 cores."""
    import numpy as np
    import polars as pl

    from nightowl.tasks.feedback import sentiment

    onnx_path, native_path = model_paths(dataset)
    if onnx_path.exists() and native_path.exists():
        saved = json.loads(native_path.read_text())
        model = sentiment.SentimentModel(
            sentiment.Vocabulary(saved["terms"], np.asarray(saved["idf"])),
            np.asarray(saved["coef"]), saved["intercept"], *saved["band"], saved["params"],
        )  # fmt: skip
        return model, onnx_path.read_bytes(), {"fit_seconds": saved["fit_seconds"], "cached": True}
    train = reviews(dataset, "training")
    labels = (train["score"] == "great").cast(pl.Float64)
    t0 = time.perf_counter()
    model = sentiment.fit_sentiment(plain(train["review"]), labels)
    fit_seconds = time.perf_counter() - t0
    onnx_bytes = sentiment.onnx_from_model(model)
    DATA.mkdir(parents=True, exist_ok=True)
    saved = {"terms": model.vocab.terms, "idf": model.vocab.idf.tolist(),
             "coef": model.coef.tolist(), "intercept": model.intercept,
             "band": [model.negative_below, model.positive_from], "params": model.params,
             "fit_seconds": fit_seconds}  # fmt: skip
    for path, data in ((onnx_path, onnx_bytes), (native_path, json.dumps(saved).encode())):
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(data)
        tmp.rename(path)
    log(f"fitted the sentiment model in {fit_seconds:.0f}s ({model.params['terms']:,} terms)")
    return model, onnx_bytes, {"fit_seconds": fit_seconds, "cached": False}


# ---- part 1: quality on the real test split ------------------------------------------------------


def quality(dataset: Path) -> dict[str, Any]:
    """Metrics of nightowl's model, the VADER lexicon and the scikit-learn reference on the test
    split, and the ONNX-vs-native parity of nightowl's model."""
    import numpy as np
    import polars as pl
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    from nightowl.tasks.feedback import sentiment
    from nightowl.tasks.models import score

    train, test = reviews(dataset, "training"), reviews(dataset, "testing")
    train_texts, test_texts = plain(train["review"]), plain(test["review"])
    truth = pl.Series("truth", np.where(test["score"] == "great", "positive", "negative"))
    model, onnx_bytes, fit = sentiment_model(dataset)
    sess = score.session(onnx_bytes, [score.CPU], threads=THREADS)
    ours = sentiment.onnx_scores(sess, test_texts)
    native = sentiment.native_scores(model, test_texts)
    lexicon = sentiment.lexicon_scores(test_texts)

    t0 = time.perf_counter()
    vectorizer = TfidfVectorizer(ngram_range=(1, 2))
    x_train = vectorizer.fit_transform(train_texts.to_list())
    # Default settings but for the iteration cap, raised so that lbfgs always converges (here it
    # needs 27 iterations, under the default 100).
    reference = LogisticRegression(max_iter=5000).fit(x_train, (train["score"] == "great"))
    reference_fit = time.perf_counter() - t0
    ref_scores = reference.predict_proba(vectorizer.transform(test_texts.to_list()))[:, 1]

    band = (model.negative_below, model.positive_from)
    scorers = {
        "nightowl model (ONNX)": (ours, band),
        "VADER lexicon": (lexicon, sentiment.LEXICON_BAND),
        "reference: sklearn TF-IDF + LR": (ref_scores, (0.5, 0.5)),
    }
    metrics = {
        name: sentiment.sentiment_metrics(truth, scores, *cut) | {"band": list(cut)}
        for name, (scores, cut) in scorers.items()
    }
    lo, hi = sentiment.LEXICON_BAND
    return {
        "train_rows": train.height,
        "test_rows": test.height,
        "test_positive": int((truth == "positive").sum()),
        "metrics": metrics,
        "parity_max_abs_diff": sentiment.max_abs_diff(ours, native),
        "lexicon_neutral": int(((lexicon >= lo) & (lexicon < hi)).sum()),
        "model_params": model.params,
        "model_fit_seconds": fit["fit_seconds"],
        "model_cached": fit["cached"],
        "reference_fit_seconds": reference_fit,
        "reference_terms": len(vectorizer.vocabulary_),
    }


def quality_table(found: dict[str, Any]) -> str:
    head = ["scorer", "accuracy", "macro-F1", "ROC-AUC", "Δ accuracy", "Δ macro-F1", "Δ ROC-AUC"]
    metrics = found["metrics"]
    ref = metrics["reference: sklearn TF-IDF + LR"]
    lines = []
    for name, m in metrics.items():
        deltas = [""] * 3
        if not name.startswith("reference"):
            deltas = [f"{m[k] - ref[k]:+.3f}" for k in ("accuracy", "macro_f1", "roc_auc")]
        lines.append([name, *(f"{m[k]:.3f}" for k in ("accuracy", "macro_f1", "roc_auc")),
                      *deltas])  # fmt: skip
    return text_table(head, lines, right={1, 2, 3, 4, 5, 6})


# ---- part 2: the input, 1M feedback rows ---------------------------------------------------------


def input_path(n: int) -> Path:
    return DATA / f"feedback-texts-{n}-v2.parquet"  # v2: raw rows carry their ledger place


def luhn_completed(body: str) -> str:
    """``body`` (digits) with the check digit that makes it pass the Luhn check."""
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch)
        if i % 2 == 0:  # doubled: the check digit will sit to the right of this one
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return body + str((10 - total % 10) % 10)


def planted(kind: str, rng: Any) -> tuple[str, str]:
    """A sentence holding one contact detail of ``kind``, and the detail as written."""
    if kind == "email":
        value = (
            f"{rng.choice(['jane', 'tom', 'amy', 'raj'])}.{rng.integers(10, 99_999)}@example.com"
        )
        return f"Please email me at {value} about this.", value
    if kind == "phone":
        value = f"+44 7700 900{rng.integers(0, 1000):03d}"
        return f"You can call me on {value} in the evening.", value
    digits = luhn_completed("4" + "".join(str(d) for d in rng.integers(0, 10, 14)))
    value = " ".join(digits[i : i + 4] for i in range(0, 16, 4))
    return f"My card {value} was charged twice for this order.", value


def make_input(n: int, dataset: Path) -> Path:
    """The cached feedback rows (contract columns, lineage) and, beside them, what was planted
    where (``.truth.parquet``: the row's planted kind and value, null where none)."""
    import numpy as np
    import polars as pl

    path = input_path(n)
    truth_path = path.with_suffix(".truth.parquet")
    if path.exists() and truth_path.exists() and path.with_suffix(".json").exists():
        return path
    t0 = time.perf_counter()
    DATA.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(SEED)
    pool = pl.concat([reviews(dataset, "training"), reviews(dataset, "testing")])
    pick = rng.integers(0, pool.height, n)
    great = (pool["score"] == "great").to_numpy()[pick]
    words = np.asarray(SUFFIX_WORDS)[rng.integers(0, len(SUFFIX_WORDS), n)]
    numbers = rng.integers(1, 10_000, n)
    kinds = np.full(n, None, dtype=object)
    values = np.full(n, None, dtype=object)
    sentences = np.full(n, "", dtype=object)
    for i in np.flatnonzero(rng.random(n) < PII_SHARE):
        kinds[i] = PII_KINDS[rng.integers(0, len(PII_KINDS))]
        sentence, values[i] = planted(kinds[i], rng)
        sentences[i] = " " + sentence
    text = pl.select(
        pl.concat_str(
            pl.lit(pool["review"].gather(pick)),
            pl.lit(pl.Series(sentences, dtype=pl.String)),
            pl.lit(" "),
            pl.lit(pl.Series(words)),
            pl.lit(" "),
            pl.lit(pl.Series(numbers).cast(pl.String)),
        ).alias("text")
    ).to_series()
    channel = np.asarray(CHANNELS)[rng.choice(len(CHANNELS), n, p=CHANNEL_P)]
    stars = np.where(great, 5, rng.choice([1, 2, 3, 4], n, p=OTHER_STARS_P))
    rating = pl.Series(stars, dtype=pl.Int64).scatter(np.flatnonzero(channel == "support"), None)
    titles = np.where(
        great,
        np.asarray(TITLES["great"])[rng.integers(0, 5, n)],
        np.asarray(TITLES["other"])[rng.integers(0, 5, n)],
    )
    title = pl.Series(titles).scatter(np.flatnonzero(rng.random(n) < 0.4), None)
    end = datetime(RUN_DATE.year, RUN_DATE.month, RUN_DATE.day, tzinfo=UTC) + timedelta(days=1)
    micros = np.sort(rng.integers(0, DAYS * 86_400_000_000, n))  # arrival order is time order
    created = pl.Series(np.int64(end.timestamp() * 1_000_000) - micros[::-1]).cast(
        pl.Datetime("us", "UTC")
    )
    user = pl.Series([f"u{u:06d}" for u in rng.integers(0, 200_000, n)])
    frame = pl.DataFrame(
        {
            "_run": pl.Series([RUN_DATE]).new_from_index(0, n),
            "_entry": pl.Series([0], dtype=pl.UInt32).new_from_index(0, n),
            "source_file": f"feedback-{RUN_DATE.isoformat()}.parquet",
            "source_row": pl.int_range(1, n + 1, eager=True).cast(pl.Int64),
            "feedback_id": [f"fb{i:08d}" for i in range(n)],
            "user_id": user.scatter(np.flatnonzero(channel == "app_store"), None),
            "item_id": pool["product"].gather(pick),
            "rating": rating,
            "title": title,
            "text": text,
            "channel": channel,
            "created_at": created,
        }
    )
    # Row groups of 50k rows: a chunk read by slice touches little beyond its rows.
    tmp = path.with_suffix(".tmp")
    frame.write_parquet(tmp, row_group_size=50_000)
    pl.DataFrame(
        {"kind": kinds.tolist(), "value": values.tolist()},
        schema={"kind": pl.String, "value": pl.String},
    ).write_parquet(truth_path)
    tmp.rename(path)
    described = {
        "texts": n,
        "distinct_texts": text.n_unique(),
        "planted": {k: int((kinds == k).sum()) for k in PII_KINDS},
        "mean_chars": float(text.str.len_chars().mean()),
        "with_html": int(text.str.contains("<br").sum()),
        "seed": SEED,
    }
    path.with_suffix(".json").write_text(json.dumps(described, indent=2))
    log(f"made {n:,} feedback rows in {time.perf_counter() - t0:.0f}s under {path}")
    return path


# ---- the two sides (each runs in a child process) ------------------------------------------------


def run_nightowl(spec: dict[str, Any]) -> dict[str, Any]:
    """nightowl's nightly path, chunk by chunk: clean (plain text, redaction, cap, verdicts),
    sentiment through ONNX Runtime, then the feedback_scores rows (labels, aspects)."""
    import numpy as np
    import polars as pl

    from nightowl.schemas.config import FeedbackSettings
    from nightowl.tasks.feedback import sentiment
    from nightowl.tasks.feedback.units import scored_feedback
    from nightowl.tasks.ingest import clean
    from nightowl.tasks.models import score

    cfg = FeedbackSettings()
    path, n, chunk = Path(spec["input"]), spec["texts"], spec["chunk"]
    band = tuple(spec["band"])
    cutoff = clean.future_cutoff(RUN_DATE, 24.0)
    t0 = time.perf_counter()
    sess = score.session(Path(spec["model"]).read_bytes(), [score.CPU], threads=THREADS)
    session_seconds = time.perf_counter() - t0
    phases = dict.fromkeys(("read", "clean", "score", "table"), 0.0)
    kept = texts_with_pii = truncated = 0
    labels: dict[str, int] = {}
    aspects: dict[str, int] = {}
    flagged: dict[str, int] = {}  # PII kinds found in texts where nothing was planted
    caught = dict.fromkeys(PII_KINDS, 0)
    leaked = dict.fromkeys(PII_KINDS, 0)
    planted_n = dict.fromkeys(PII_KINDS, 0)
    all_scores = []
    profiler = None
    if spec["profile"]:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    for start in range(0, n, chunk):
        t = time.perf_counter()
        raw = pl.scan_parquet(path).slice(start, chunk).collect()
        t1 = time.perf_counter()
        verdicts = clean.cleaned_feedback(
            raw.lazy(), cutoff, cfg.max_text_chars, cfg.phone_region
        ).collect()
        good = clean.accepted_clean_rows(verdicts.lazy(), clean.SPECS["feedback"]).collect()
        t2 = time.perf_counter()
        # As feedback_scores_table scores them: float32 from ONNX Runtime, widened.
        scores = sentiment.onnx_scores(sess, good["text"].fill_null("")).astype(np.float64)
        t3 = time.perf_counter()
        table = scored_feedback(good, scores, band, "model", "bench", cfg.aspects)
        t4 = time.perf_counter()
        for phase, seconds in zip(phases, (t1 - t, t2 - t1, t3 - t2, t4 - t3), strict=True):
            phases[phase] += seconds
        # The clock has stopped for this chunk: what came out, for the printed checks.
        if good.height != raw.height:
            raise SystemExit(f"clean rejected {raw.height - good.height} rows of a clean input")
        kept += table.height
        all_scores.append(scores.astype(np.float32))
        for label, count in table["sentiment_label"].value_counts().iter_rows():
            labels[label] = labels.get(label, 0) + count
        for aspect, count in table["aspects"].explode().drop_nulls().value_counts().iter_rows():
            aspects[aspect] = aspects.get(aspect, 0) + count
        texts_with_pii += int((table["pii"].list.len() > 0).sum())
        truncated += int((table["text_chars"] > cfg.max_text_chars).sum())
        truth = pl.scan_parquet(path.with_suffix(".truth.parquet")).slice(start, chunk).collect()
        checked = table.select("text", "pii").hstack(truth)
        for kind in PII_KINDS:
            mine = checked.filter(pl.col("kind") == kind)
            planted_n[kind] += mine.height
            caught[kind] += int(mine["pii"].list.contains(kind).sum())
            left = mine.select(pl.col("text").str.contains(pl.col("value"), literal=True).sum())
            leaked[kind] += int(left.item())
        unplanted = checked.filter(pl.col("kind").is_null())["pii"].explode().drop_nulls()
        for kind, count in unplanted.value_counts().iter_rows():
            flagged[kind] = flagged.get(kind, 0) + count
        done = start + raw.height
        log(f"nightowl {done:>9,} texts, {done / sum(phases.values()):,.0f} texts/s so far")
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(Path(spec["work"]) / "nightowl.prof")
    np.save(Path(spec["work"]) / "scores.npy", np.concatenate(all_scores))
    return {
        "seconds": sum(phases.values()),
        "phases": phases,
        "session_seconds": session_seconds,
        "texts_scored": kept,
        "labels": labels,
        "aspects": dict(sorted(aspects.items(), key=lambda kv: -kv[1])),
        "texts_with_pii": texts_with_pii,
        "truncated": truncated,
        "planted": planted_n,
        "caught": caught,
        "leaked": leaked,
        "flagged_unplanted": flagged,
    }


def run_lexicon(spec: dict[str, Any]) -> dict[str, Any]:
    """The VADER lexicon on the same texts, made plain first (no redaction, no aspects)."""
    import numpy as np
    import polars as pl

    from nightowl.tasks.feedback import sentiment

    path, n, chunk = Path(spec["input"]), spec["texts"], spec["chunk"]
    phases = dict.fromkeys(("read", "plain", "vader"), 0.0)
    all_scores = []
    for start in range(0, n, chunk):
        t = time.perf_counter()
        size = min(chunk, n - start)
        texts = pl.scan_parquet(path).select("text").slice(start, size).collect().to_series()
        t1 = time.perf_counter()
        texts = plain(texts).fill_null("")
        t2 = time.perf_counter()
        all_scores.append(sentiment.lexicon_scores(texts))
        t3 = time.perf_counter()
        for phase, seconds in zip(phases, (t1 - t, t2 - t1, t3 - t2), strict=True):
            phases[phase] += seconds
        done = start + size
        log(f"lexicon  {done:>9,} texts, {done / sum(phases.values()):,.0f} texts/s so far")
    np.save(Path(spec["work"]) / "scores.npy", np.concatenate(all_scores).astype(np.float32))
    return {"seconds": sum(phases.values()), "phases": phases, "texts_scored": n}


def worker(spec_path: Path) -> None:
    spec = json.loads(spec_path.read_text())
    found = run_nightowl(spec) if spec["engine"] == "nightowl" else run_lexicon(spec)
    found["peak_rss_mib"] = peak_rss_mib()
    Path(spec["result"]).write_text(json.dumps(found))


def run_side(engine: str, **spec: Any) -> dict[str, Any]:
    """One side in its own process; its results, with the folder its scores were saved in."""
    work = OUT / f"run-feedback-{engine}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    result = OUT / f".result-feedback-{engine}.json"
    spec_path = work / "spec.json"
    spec_path.write_text(json.dumps(spec | {"engine": engine, "work": str(work),
                                            "result": str(result)}))  # fmt: skip
    found = run_worker("bench.feedback", [str(spec_path)], f"{engine:9}", result)
    return found | {"engine": engine, "work": work}


# ---- the parent: quality in-process, throughput one child per side ---------------------------


def throughput_table(results: list[dict]) -> str:
    head = ["engine", "texts", "seconds", "texts/s", "peak RSS MiB", "ratio"]
    lines = []
    for r in results:
        ratio = r.get("ratio")
        lines.append([r["label"], f"{r['texts_scored']:,}", *measured_cells(r),
                      "" if ratio is None else f"{ratio:.2f}x"])  # fmt: skip
    return text_table(head, lines, right={1, 2, 3, 4, 5})


def label_codes(scores: Any, band: tuple[float, float]) -> Any:
    """negative / neutral / positive (0 / 1 / 2) per score, as ``sentiment_labels`` cuts them."""
    import numpy as np

    return np.where(scores < band[0], 0, np.where(scores >= band[1], 2, 1))


def per_100k(seconds: float, texts: int) -> str:
    return f"{seconds:.2f}s ({seconds / texts * 100_000:.2f}s per 100k)"


def profile_lines(prof: Path, texts: int) -> list[str]:
    """The functions of ``tasks`` and ONNX Runtime that took most time (cumulative, per 100k
    texts), from the nightowl child's cProfile. Polars runs a UDF such as ``redacted_text`` on
    its own threads, which cProfile does not see: such time shows in ``collect``."""
    import pstats

    stats = pstats.Stats(str(prof)).stats
    rows = []
    for (file, line, name), (_, calls, _, cumulative, _) in stats.items():
        short = file.replace(str(REPO) + "/", "")
        if (
            short.startswith("tasks/")
            or "onnxruntime" in file + name
            or name == "<method 'collect' of 'builtins.PyLazyFrame' objects>"
        ):
            rows.append((cumulative, f"{short}:{line}({name})", calls))
    rows.sort(reverse=True)
    return [
        f"  {cum / texts * 100_000:7.2f}s per 100k  {calls:>7,} calls  {where}"
        for cum, where, calls in rows[:14]
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.feedback",
        description=(
            "Feedback text: (1) sentiment quality on the Amazon Fine Food sample (test split) of "
            "nightowl's TF-IDF model via ONNX, the VADER lexicon and a plain scikit-learn "
            "TfidfVectorizer + LogisticRegression reference, with the ONNX-vs-native parity; "
            "(2) throughput on 1M feedback texts resampled from those reviews: nightowl's clean "
            "(plain text, PII redaction, cap) + ONNX sentiment + feedback_scores rows (labels, "
            "aspects), beside the VADER lexicon on the same texts, each in its own process with "
            "2 threads. Prints two tables (metrics and model - reference; texts/s, peak RSS, "
            "ratio nightowl texts/s / lexicon texts/s), the nightowl time split and the "
            "redaction check, and writes bench/out/feedback-results.json.\n\n"
            "examples:\n"
            "  python -m bench.feedback                          # quality + 1M texts (~20 min)\n"
            "  python -m bench.feedback --texts 20000            # quick smoke run\n"
            "  python -m bench.feedback --only quality           # the metrics alone (seconds)\n"
            "  python -m bench.feedback --lexicon-texts 100000   # VADER on the first 100k only\n"
            "  python -m bench.feedback --texts 100000 --profile # where nightowl's time goes"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--texts", type=int, default=1_000_000, help="texts (default 1M)")
    parser.add_argument(
        "--chunk", type=int, default=100_000, help="texts per chunk, both sides (default 100k)"
    )
    parser.add_argument(
        "--lexicon-texts",
        type=int,
        help="score only the first N texts on the lexicon side and compare per-text rates "
        "(default: all texts)",
    )
    parser.add_argument(
        "--only", choices=("quality", "throughput"), help="run one part (default: both)"
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="run the nightowl side under cProfile and print its costliest functions (the "
        "profiler slows it: its time is then not comparable)",
    )
    parser.add_argument(
        "--dataset", type=Path, default=DATASET, help=f"Amazon sample folder (default {DATASET})"
    )
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.worker)
        return 0

    import numpy as np

    from nightowl.tasks.feedback.sentiment import LEXICON_BAND

    fields: dict[str, Any] = {}
    if args.only != "throughput":
        q = quality(args.dataset)
        fields["quality"] = q
        print(quality_table(q))
        print(
            f"test split: {q['test_rows']:,} reviews ({q['test_positive']:,} positive, i.e. "
            f"always-positive accuracy {q['test_positive'] / q['test_rows']:.3f}); fitted on "
            f"{q['train_rows']:,}. Δ: that scorer - the reference (sklearn TfidfVectorizer"
            f"(ngram_range=(1, 2)) + LogisticRegression(), positive from p >= 0.5)"
        )
        p = q["model_params"]
        print(
            f"nightowl model: C {p['C']}, {p['terms']:,} terms, band {p['negative_below']}/"
            f"{p['positive_from']}, fit {q['model_fit_seconds']:.0f}s"
            f"{' (cached)' if q['model_cached'] else ''}; ONNX vs native max |dp| "
            f"{q['parity_max_abs_diff']:.2e} on the test split. reference: "
            f"{q['reference_terms']:,} terms, fit {q['reference_fit_seconds']:.1f}s. VADER "
            f"called {q['lexicon_neutral']} test reviews neutral (counted wrong)"
        )
    if args.only != "quality":
        model, _, _ = sentiment_model(args.dataset)
        onnx_path = model_paths(args.dataset)[0]
        band = (model.negative_below, model.positive_from)
        path = make_input(args.texts, args.dataset)
        described = json.loads(path.with_suffix(".json").read_text())
        lexicon_texts = min(args.lexicon_texts or args.texts, args.texts)
        common = {"input": str(path), "chunk": args.chunk}
        ours = run_side("nightowl", **common, texts=args.texts, model=str(onnx_path),
                        band=band, profile=args.profile)  # fmt: skip
        theirs = run_side("lexicon", **common, texts=lexicon_texts, profile=False)
        ours["label"] = "nightowl (clean + redact + ONNX + aspects)"
        theirs["label"] = "VADER lexicon (plain text only)"
        for r in (ours, theirs):
            r["rows_per_s"] = r["texts_scored"] / r["seconds"]
        ours["ratio"] = ours["rows_per_s"] / theirs["rows_per_s"]
        s_ours = np.load(ours["work"] / "scores.npy")[:lexicon_texts]
        s_lex = np.load(theirs["work"] / "scores.npy")
        ours_l, lex_l = label_codes(s_ours, band), label_codes(s_lex, LEXICON_BAND)
        agreement = float((ours_l == lex_l).mean())
        lexicon_share = {k: float((lex_l == i).mean()) for i, k in enumerate(LABEL_NAMES)}
        prof = ours["work"] / "nightowl.prof"
        profile = profile_lines(prof, args.texts) if args.profile and prof.exists() else []
        for r in (ours, theirs):
            shutil.rmtree(r.pop("work"), ignore_errors=True)
        results = [ours, theirs]
        fields |= {"texts": args.texts, "chunk": args.chunk, "lexicon_texts": lexicon_texts,
                   "input": described | {"path": str(path)}, "results": results,
                   "label_agreement": agreement, "lexicon_labels": lexicon_share,
                   "profiled": args.profile}  # fmt: skip
        print()
        print(throughput_table(results))
        print("ratio: nightowl texts/s / VADER lexicon texts/s (more than 1: nightowl is faster)")
        ph, n = ours["phases"], ours["texts_scored"]
        print(
            f"nightowl split: read {per_100k(ph['read'], n)}, clean (plain text + redaction + "
            f"cap) {per_100k(ph['clean'], n)}, sentiment (terms + ONNX Runtime) "
            f"{per_100k(ph['score'], n)}, feedback_scores rows (labels + aspects) "
            f"{per_100k(ph['table'], n)}; session {ours['session_seconds']:.2f}s before"
        )
        lp, ln = theirs["phases"], theirs["texts_scored"]
        print(
            f"lexicon split: read {per_100k(lp['read'], ln)}, plain text "
            f"{per_100k(lp['plain'], ln)}, VADER {per_100k(lp['vader'], ln)}"
        )
        print(
            f"input: {described['texts']:,} texts, {described['distinct_texts']:,} distinct, "
            f"{described['mean_chars']:.0f} chars on average, {described['with_html']:,} with "
            f"<br />; {ours['truncated']:,} cut at 5,000 chars"
        )
        print(
            "redaction: "
            + ", ".join(
                f"planted {k} {ours['planted'][k]:,}: {ours['caught'][k]:,} flagged, "
                f"{ours['leaked'][k]:,} left in the text"
                for k in PII_KINDS
            )
            + "; in unplanted texts: "
            + (
                ", ".join(f"{k} {v:,}" for k, v in sorted(ours["flagged_unplanted"].items()))
                or "nothing"
            )
        )
        labels = ours["labels"]
        print(
            "labels: nightowl "
            + ", ".join(f"{k} {labels.get(k, 0) / n:.1%}" for k in LABEL_NAMES)
            + "; VADER "
            + ", ".join(f"{k} {v:.1%}" for k, v in lexicon_share.items())
            + f"; the same label on {agreement:.1%} of {lexicon_texts:,} texts"
        )
        top = list(ours["aspects"].items())[:5]
        print("aspects (texts): " + ", ".join(f"{k} {v:,}" for k, v in top))
        for line in disturbed(results):
            print(line)
        if profile:
            print("nightowl under cProfile (slower than measured above), cumulative time:")
            print("\n".join(profile))
    write_results(RESULTS, "feedback", THREADS, code=code_version(*MEASURED), **fields)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
