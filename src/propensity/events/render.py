"""Turn simulated events (columns of numbers) into raw records: JSON lines or a Parquet table.

JSON lines are built with vectorised Arrow string kernels, one column of fragments per field
joined element-wise, because per-record `json.dumps` is the bottleneck of a 20-million-event run
(see benchmarks/bench_generate.py). All field values are plain ASCII ids, names and numbers, so
no JSON escaping is needed.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from propensity.config import EventFields
from propensity.events.behaviour import SESSION_TYPES

# Every type a record can carry: the session types, then orders (drawn by the order clock).
EVENT_TYPES = (*SESSION_TYPES, "order")
CODE = {name: i for i, name in enumerate(EVENT_TYPES)}
# Types that carry an article (with brand and category), and those that also carry its price.
WITH_ARTICLE = np.array([t not in ("search", "page_ping") for t in EVENT_TYPES])
WITH_PRICE = np.array([t not in ("search", "page_ping", "wishlist") for t in EVENT_TYPES])

# How a record writes its timestamp: ISO-8601 with one of these zones, or epoch milliseconds.
TS_ZONES = ("Z", "+00:00", "+01:00", "+02:00", "-05:00")
TS_ZONE_MINUTES = np.array([0, 0, 60, 120, -300])
TS_EPOCH_MS = len(TS_ZONES)  # format code of epoch milliseconds (JSON lines only)
TS_FORMAT_SHARE = np.array([0.20, 0.25, 0.25, 0.10, 0.10, 0.10])

PARQUET_SCHEMA_TYPES = {
    "event_id": pa.string(),
    "profile_id": pa.string(),
    "ts": pa.string(),
    "event_type": pa.string(),
    "article_id": pa.string(),
    "brand": pa.string(),
    "category": pa.string(),
    "price": pa.float64(),
}


@dataclass
class Events:
    """Simulated events as aligned numpy columns (indices into the catalogue and profiles)."""

    event_id: np.ndarray  # int64, rendered as "e<number>"
    profile: np.ndarray  # int32 index of the profile
    ts: np.ndarray  # int64 epoch milliseconds (UTC)
    etype: np.ndarray  # int8 code into EVENT_TYPES
    article: np.ndarray  # int32 index into the catalogue
    ts_format: np.ndarray  # int8: index into TS_ZONES, or TS_EPOCH_MS

    def __len__(self) -> int:
        return len(self.ts)

    def take(self, idx: np.ndarray) -> Events:
        return Events(**{k: v[idx] for k, v in vars(self).items()})

    @staticmethod
    def concat(parts: list[Events]) -> Events:
        return Events(**{k: np.concatenate([getattr(p, k) for p in parts]) for k in vars(parts[0])})


class Renderer:
    """Renders events with the catalogue's ids, the profiles' ids and the configured field names.

    The JSON text of everything that repeats (a profile's id, an article's id, brand, category
    and price, an event type, a minute of the day) is built once here and then picked per
    event with `take`: joining a few long pieces is much cheaper than many short ones.
    """

    def __init__(self, catalogue, profile_ids: pa.Array, fields: EventFields):
        self.cat = catalogue
        self.profile_ids = profile_ids
        self.names = {k: getattr(fields, k) for k in PARQUET_SCHEMA_TYPES}
        self.schema = pa.schema([(self.names[k], t) for k, t in PARQUET_SCHEMA_TYPES.items()])
        self.type_names = pa.array(EVENT_TYPES)
        key = {k: json.dumps(v) for k, v in self.names.items()}
        self.head = f'{{{key["event_id"]}:"e'
        # '","profile_id":"p0001234","ts":' per profile
        self.profile_json = pc.binary_join_element_wise(
            f'",{key["profile_id"]}:"', profile_ids, f'",{key["ts"]}:', ""
        )
        # ',"event_type":"view"' per type
        self.type_json = pa.array([f',{key["event_type"]}:"{t}"' for t in EVENT_TYPES])
        # ',"article_id":"a0001234","brand":"b0012","category":"boots"' per article
        self.article_json = pc.binary_join_element_wise(
            f',{key["article_id"]}:"', catalogue.article_ids,
            f'",{key["brand"]}:"', catalogue.brand_ids.take(pa.array(catalogue.brand)),
            f'",{key["category"]}:"', catalogue.category_names.take(pa.array(catalogue.category)),
            '"', "",
        )  # fmt: skip
        # ',"price":29.99' per article
        self.price_json = pc.binary_join_element_wise(
            f",{key['price']}:", pc.cast(pa.array(catalogue.price), pa.string()), ""
        )

    def columns(self, ev: Events) -> dict[str, pa.Array]:
        """String/number columns of the records (nulls where a type has no article or price)."""
        no_article = pa.array(~WITH_ARTICLE[ev.etype])
        art = pa.array(ev.article)
        price = pa.array(np.where(WITH_PRICE[ev.etype], self.cat.price[ev.article], np.nan))
        return {
            "event_id": pc.binary_join_element_wise(
                "e", pc.cast(pa.array(ev.event_id), pa.string()), ""
            ),
            "profile_id": self.profile_ids.take(pa.array(ev.profile)),
            "event_type": self.type_names.take(pa.array(ev.etype)),
            "article_id": pc.if_else(no_article, None, self.cat.article_ids.take(art)),
            "brand": pc.if_else(
                no_article, None, self.cat.brand_ids.take(pa.array(self.cat.brand[ev.article]))
            ),
            "category": pc.if_else(
                no_article,
                None,
                self.cat.category_names.take(pa.array(self.cat.category[ev.article])),
            ),
            "price": pc.if_else(pc.is_nan(price), None, price),
        }

    def table(self, ev: Events) -> pa.Table:
        """A Parquet-ready table; timestamps as ISO strings (epoch-format rows get zone "Z")."""
        cols = self.columns(ev)
        zone = np.where(ev.ts_format == TS_EPOCH_MS, 0, ev.ts_format)
        cols["ts"] = iso_timestamps(ev.ts, zone)
        return pa.table([cols[k] for k in PARQUET_SCHEMA_TYPES], schema=self.schema)

    def json_lines(self, ev: Events) -> pa.Array:
        """One JSON object per event, as a string array (no trailing newlines)."""
        epoch = ev.ts_format == TS_EPOCH_MS
        ts = pc.if_else(
            pa.array(epoch),
            pc.cast(pa.array(ev.ts), pa.string()),
            iso_timestamps(ev.ts, np.where(epoch, 0, ev.ts_format), quoted=True),
        )
        art = pa.array(ev.article)
        article = pc.if_else(pa.array(~WITH_ARTICLE[ev.etype]), None, self.article_json.take(art))
        price = pc.if_else(pa.array(~WITH_PRICE[ev.etype]), None, self.price_json.take(art))
        return pc.binary_join_element_wise(
            self.head, pc.cast(pa.array(ev.event_id), pa.string()),
            self.profile_json.take(pa.array(ev.profile)), ts,
            self.type_json.take(pa.array(ev.etype)), article, price, "}", "",
            null_handling="replace", null_replacement="",
        )  # fmt: skip


# "HH:MM:" for every minute of a day and "SS.mmm" for every millisecond of a minute.
_MINUTES = pa.array([f"{m // 60:02d}:{m % 60:02d}:" for m in range(1440)])
_MILLIS = pa.array([f"{ms // 1000:02d}.{ms % 1000:03d}" for ms in range(60_000)])


def iso_timestamps(ts_ms: np.ndarray, zone: np.ndarray, quoted: bool = False) -> pa.Array:
    """ISO-8601 strings with milliseconds in the given zones (indices into TS_ZONES),
    in double quotes for JSON if `quoted`."""
    local = ts_ms + TS_ZONE_MINUTES[zone] * 60_000
    day, ms = np.divmod(local, 86_400_000)
    first = int(day.min()) if len(day) else 0
    span = int(day.max()) - first + 1 if len(day) else 0
    epoch = dt.date(1970, 1, 1)
    q = '"' if quoted else ""
    dates = [f"{q}{epoch + dt.timedelta(days=first + i)}T" for i in range(span)]
    minute, millis = np.divmod(ms, 60_000)
    return pc.binary_join_element_wise(
        pa.array(dates).take(pa.array(day - first)),
        _MINUTES.take(pa.array(minute)),
        _MILLIS.take(pa.array(millis)),
        pa.array([z + q for z in TS_ZONES]).take(pa.array(zone)),
        "",
    )
