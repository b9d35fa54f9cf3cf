"""Moderators' confirmed reviews as labelled data: ``fakescan calibrate DETECTOR --from-reviews``.

Each object whose latest review is ``confirmed-fake`` (label fake) or ``confirmed-real`` (label
real) is one item, read from its store with the worker's size limit; ``unsure`` and unreviewed
objects are left out. The set's fingerprint covers keys, sizes and labels like any other set, so
a calibration records which reviews it used.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

from fakescan.db import queries, reviews
from fakescan.db.engine import make_engine, make_sessionmaker
from fakescan.db.migrate import ensure_schema
from fakescan.errors import DataError
from fakescan.settings import Settings
from fakescan.storage import Store, open_store
from worker.lab.data import LabelledItem, LabelledSet


class ReviewedSet(LabelledSet):
    def __init__(self, settings: Settings, scan_id: int | None = None) -> None:
        self.settings, self.stores = settings, {}  # type: ignore[var-annotated]
        self.source = "reviews" + (f" of scan {scan_id}" if scan_id is not None else "")
        engine = make_engine(settings)
        try:
            ensure_schema(settings, engine)
            with make_sessionmaker(engine)() as session:
                rows = reviews.labelled_objects(session, scan_id)
                sizes = queries.object_sizes(session, [row[0] for row in rows])
        finally:
            engine.dispose()
        self.roots = {uri: (store, key) for _, store, key, uri, _ in rows}
        self.items = [LabelledItem(uri, label, sizes.get(object_id) or -1) for object_id, _, _, uri, label in rows]
        if not self.items:
            raise DataError(f"no {self.source} confirm a label yet: record confirmed-fake/confirmed-real reviews first")
        self._finish()

    def _store(self, root: str) -> Store:
        if root not in self.stores:
            self.stores[root] = open_store(root, self.settings)
        return self.stores[root]

    def read(self, item: LabelledItem) -> bytes:
        root, key = self.roots[item.key]
        return self._store(root).read(key, self.settings.max_object_bytes)

    def read_many(self, items: Sequence[LabelledItem]) -> Iterator[bytes]:
        for root, _ in {self.roots[item.key] for item in items}:
            self._store(root)  # built once, before the threads share them
        with ThreadPoolExecutor(max_workers=8) as pool:
            yield from pool.map(self.read, items)
