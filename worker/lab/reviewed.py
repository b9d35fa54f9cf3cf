"""Moderators' confirmed reviews as labelled data: ``fakescan calibrate DETECTOR --from-reviews``.

Each object whose latest review is ``confirmed-fake`` (label fake) or ``confirmed-real`` (label
real) is one item, read from its store with the worker's size limit; ``unsure`` and unreviewed
objects are left out. The set's fingerprint covers keys, sizes and labels like any other set, so
a calibration records which reviews it used.
"""

from __future__ import annotations

from fakescan.db import queries, reviews
from fakescan.db.database import open_database
from fakescan.errors import DataError
from fakescan.settings import Settings
from fakescan.storage import open_store
from worker.lab.data import LabelledItem, LabelledSet


def open_reviewed(settings: Settings, scan_id: int | None = None) -> LabelledSet:
    source = "reviews" + (f" of scan {scan_id}" if scan_id is not None else "")
    with open_database(settings) as database, database.sessions() as session:
        rows = reviews.labelled_objects(session, scan_id)
        sizes = queries.object_sizes(session, [row[0] for row in rows])
    if not rows:
        raise DataError(f"no {source} confirm a label yet: record confirmed-fake/confirmed-real reviews first")
    stores = {root: open_store(root, settings) for _, root, _, _, _ in rows}  # built once, shared by the readers
    located = {uri: (stores[root], key) for _, root, key, uri, _ in rows}

    def read(uri: str) -> bytes:
        store, key = located[uri]
        return store.read(key, settings.max_object_bytes)

    items = [LabelledItem(uri, label, sizes.get(object_id) or -1) for object_id, _, _, uri, label in rows]
    return LabelledSet(source, items, read, settings, concurrent=True)
