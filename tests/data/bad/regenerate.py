"""Writes the hostile landing files of this folder (run it to rebuild them; they are committed).

Each file is one way a landing drop goes wrong. ``expected.toml`` says what ingest must make of it:
the run goes on, and the file is either refused with a message naming it, or ingested with every
row it read either accepted or quarantined with a reason.
"""

from __future__ import annotations

import gzip
import io
import json
from pathlib import Path

import polars as pl

HERE = Path(__file__).parent
HEAD = "event_id,user_id,event_time,event_type,item_id,quantity,price"
ROW = "e{n},u{n},2026-11-19T08:{m:02d}:00Z,view,i1,1,9.5"


def good_rows(n: int, start: int = 1) -> list[str]:
    return [ROW.format(n=i, m=i % 60) for i in range(start, start + n)]


def csv(*lines: str) -> bytes:
    return ("\n".join(lines) + "\n").encode()


def gz(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


def jsonl(*records: object) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in records).encode()


def parquet(frame: pl.DataFrame) -> bytes:
    buf = io.BytesIO()
    frame.write_parquet(buf)
    return buf.getvalue()


EVENT = {"user_id": "u1", "event_time": "2026-11-19T08:00:00Z", "event_type": "view"}

FILES: dict[str, bytes] = {
    # --- encodings and bytes
    "events/bom.csv": b"\xef\xbb\xbf" + csv(HEAD, *good_rows(3)),
    "events/not_utf8_bytes.csv": csv(HEAD, *good_rows(2))
    + b"e9,u9,2026-11-19T08:09:00Z,view,caf\xe9,1,9.5\n",
    "events/utf16.csv": ("\n".join([HEAD, *good_rows(2)]) + "\n").encode("utf-16"),
    "events/nul_bytes.csv": csv(HEAD, *good_rows(2))
    + b"e9,u9\x00x,2026-11-19T08:09:00Z,view,i1,1,9\n",
    "events/binary_garbage.csv": bytes((i * 7919 + 13) % 256 for i in range(4096)),
    "events/crlf.csv": ("\r\n".join([HEAD, *good_rows(3)]) + "\r\n").encode(),
    # --- CSV structure
    "events/quoted_delimiters.csv": csv(
        "user_id,event_time,event_type,item_id,channel",
        'u1,2026-11-19T08:00:00Z,view,i1,"web, mobile"',
        'u2,2026-11-19T08:01:00Z,view,i1,"say ""hi"", twice"',
    ),
    "events/embedded_newlines.csv": csv(
        "user_id,event_time,event_type,item_id,channel",
        'u1,2026-11-19T08:00:00Z,view,i1,"line one\nline two"',
        'u2,2026-11-19T08:01:00Z,view,i1,"a\r\nb"',
        "u3,2026-11-19T08:02:00Z,view,i1,web",
    ),
    "events/ragged_rows.csv": csv(
        HEAD, *good_rows(2), "e9,u9,2026-11-19T08:09:00Z,view,i1,1,9,extra"
    ),
    "events/duplicate_headers.csv": csv(
        "user_id,event_time,event_type,user_id", "u1,2026-11-19T08:00:00Z,view,u2"
    ),
    "events/wrong_delimiter.csv": csv(
        HEAD.replace(",", ";"), *(r.replace(",", ";") for r in good_rows(2))
    ),
    "events/header_only.csv": csv(HEAD),
    "events/empty.csv": b"",
    "events/unterminated_quote.csv": csv(
        HEAD, *good_rows(2), 'e9,u9,"2026-11-19T08:09:00Z,view,i1,1,9'
    ),
    # A copy cut mid-row: the last line reads as price 17.0 but has no line end.
    "events/cut_mid_row.csv": csv(HEAD, *good_rows(2))
    + b"e3,u3,2026-11-19T08:03:00Z,view,i1,1,17.",
    "events/short_rows.csv": csv(
        HEAD,
        *good_rows(1),
        "e2,u2,2026-11-19T08:02:00Z,view",  # four of seven fields: not filled with empties
        *good_rows(1, start=3),
        "e4,u4,2026-11-19T08:04:00Z,view,i1,1,",  # seven fields, the last empty: fine
    ),
    # --- values
    "events/mixed_types.csv": csv(
        HEAD,
        *good_rows(1),
        "e2,u2,2026-11-19T08:02:00Z,view,i1,two,9.5",
        "e3,u3,2026-11-19T08:03:00Z,view,i1,1,NaN",
        "e4,u4,2026-11-19T08:04:00Z,view,i1,1,inf",
        "e5,u5,2026-11-19T08:05:00Z,view,i1,-3,9.5",
        "e6,u6,2026-11-19T08:06:00Z,view,i1,1.5,9.5",
        "e7,u7,2026-11-19T08:07:00Z,view,i1,99999999999999999999,9.5",
        "e8,,2026-11-19T08:08:00Z,view,i1,1,9.5",
        "e9,u9,2026-11-19T08:09:00Z,,i1,1,9.5",
    ),
    "events/odd_timestamps.csv": csv(
        "user_id,event_time,event_type",
        "u1,2026-11-19T08:00:00Z,view",
        "u2,2026-11-19 08:00:00,view",
        "u3,2026-11-19T08:00:00.123456789Z,view",
        "u4,2026-11-19T08:00:00+05:30,view",
        "u5,19/11/2026 08:00,view",
        "u6,1763539200,view",
        '"u7","Thu, 19 Nov 2026 08:00:00 GMT",view',
        "u8,2026-W47-4,view",
        "u9,0000-00-00 00:00:00,view",
        "u10,2026-02-30T08:00:00Z,view",
        "u11,2026-11-19T25:00:00Z,view",
        "u12,yesterday,view",
    ),
    "events/huge_field.csv.gz": gz(
        csv(
            "user_id,event_time,event_type,device",
            *[f"u{i},2026-11-19T08:00:00Z,view,web" for i in range(3)],
        )
        + b"u9,2026-11-19T08:00:00Z,view,"
        + b"x" * (10 << 20)
        + b"\n"
    ),
    # --- compression
    "events/truncated.csv.gz": gz(csv(HEAD, *good_rows(500)))[:400],
    "events/not_really.csv.gz": csv(HEAD, *good_rows(2)),
    "events/zip_bomb.csv.gz": gz(csv(HEAD) + b"0" * (200 << 20)),
    # --- JSON Lines
    "events/bad_json_line.jsonl": jsonl(EVENT, EVENT) + b'{"user_id": "u3", "event_time": \n',
    "events/deeply_nested.jsonl": jsonl(EVENT)
    + b'{"user_id": '
    + b"[" * 100_000
    + b"]" * 100_000
    + b"}\n",
    "events/nested_values.jsonl": jsonl(
        EVENT,
        EVENT | {"user_id": {"id": 7}},
        EVENT | {"quantity": [1, 2]},
        EVENT | {"price": True},
    ),
    "events/json_array.json": json.dumps([EVENT, EVENT]).encode(),
    "events/not_json.jsonl": b"this is not json at all\n",
    # --- Parquet
    "events/wrong_types.parquet": parquet(
        pl.DataFrame(
            {
                "user_id": [1, 2, 3],
                "event_time": [1763539200, -1, 2**62],
                "event_type": ["view", "view", "purchase"],
                "quantity": [1.0, 2.5, -1.0],
            }
        )
    ),
    "events/missing_columns.parquet": parquet(pl.DataFrame({"user": ["u1"], "ts": ["x"]})),
    "events/not_parquet.parquet": csv(HEAD, *good_rows(2)),
    "events/unknown_format.xlsx": b"PK\x03\x04 not really a spreadsheet",
    # --- the other sources
    "items/bad_values.jsonl": jsonl(
        {"item_id": "i1", "price": "9.5", "active": "true"},
        {"item_id": "i2", "price": "-1", "active": "maybe"},
        {"item_id": "i3", "price": "1e309"},
        {"item_id": "", "price": "1"},
        {"price": "3"},
    ),
    "items/cp1252.csv": b"item_id,title,price\ni1,plain,1.0\ni2,caf\xe9 cr\xe8me,2.0\n",
    "feedback/hostile_text.jsonl.gz": gz(
        jsonl(
            {"created_at": "2026-11-19T08:00:00Z", "rating": "5", "text": "great"},
            {"created_at": "2026-11-19T08:00:00Z", "rating": "7", "text": "too good"},
            {"created_at": "2026-11-19T08:00:00Z", "rating": "0"},
            {"rating": "3", "text": "no time"},
            {
                "created_at": "2026-11-19T08:00:00Z",
                "text": "<script>alert(1)</script>\u202e\u0007 mail me at eve@example.com",
            },
            {"created_at": "2026-11-19T08:00:00Z", "text": "y" * (10 << 20)},
        )
    ),
    "market_prices/wrong_schema.parquet": parquet(
        pl.DataFrame(
            {
                "date": [20261119, 20261119],
                "item_id": ["i1", "i2"],
                "competitor": ["a", None],
                "price": ["abc", "1.5"],
            }
        )
    ),
    "market_prices/bad_numbers.csv": csv(
        "date,item_id,competitor,price",
        "2026-11-19,i1,a,1.5",
        "2026-11-19,i1,a,NaN",
        "2026-11-19,i1,a,-5",
        "2026-11-19,i1,a,",
        "2026-11-19,i1,a,Infinity",
        "2026-11-19,i1,a,1.5.5",
    ),
    "market_indicators/odd_dates.csv": csv(
        "date,indicator,value",
        "2026-11-19,fx,1.1",
        "2026/11/19,fx,1.1",
        "19.11.2026,fx,1.1",
        "20261119,fx,1.1",
        ",fx,1.1",
        "2026-13-01,fx,1.1",
    ),
    "market_indicators/tabs.tsv": b"date\tindicator\tvalue\n2026-11-19\tfx\t1.1\n",
}


def main() -> None:
    for name, data in FILES.items():
        path = HERE / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    print(f"wrote {len(FILES)} files under {HERE}")


if __name__ == "__main__":
    main()
