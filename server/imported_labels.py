"""A labelled log's tracks as the first label revision of its scene.

A scene prepared from a log that came with labels (an imported dataset, the simulator's
tracks) holds them as ``imported_labels`` (:mod:`formats.scene_store`). While the scene has
no label revision yet, they become revision 1, operation ``import``, author ``fathom``,
validated as the server validates a ``PUT``. Once any revision exists nothing is seeded
again, so preparing the log again never overwrites what annotators did since (nor re-adds
tracks they deleted).
"""

from __future__ import annotations

import logging

from pydantic import ValidationError

from formats.errors import FormatError
from formats.scene_store import Scene
from server.label_store import LabelStore, StaleRevision
from server.schemas import LabelDocument

log = logging.getLogger("fathom.server")

IMPORT_OP = "import"


def seed_imported_labels(store: LabelStore, scene: Scene) -> int:
    """Store ``scene``'s imported labels as its first revision if it has none yet; returns the
    number of tracks seeded (0 when there was nothing to seed or the scene already has labels).

    Imported labels that are damaged (FormatError) or that the API would refuse are logged and
    left out: the scene is served without them rather than not at all.
    """
    if scene.imported_labels is None or store.get(scene.scene_id)[0] != 0:
        return 0
    try:
        doc = LabelDocument.model_validate(scene.read_imported_labels()).model_dump(mode="json")
    except (FormatError, ValidationError) as exc:
        log.warning("scene %s: imported labels not seeded: %s", scene.scene_id, exc)
        return 0
    try:
        store.write(scene.scene_id, 0, lambda _: doc, op=IMPORT_OP, author="fathom",
                    record={"imported_tracks": len(doc["tracks"])})
    except StaleRevision:  # a concurrent writer got there first
        return 0
    return len(doc["tracks"])


def seed_all(store: LabelStore, scenes: list[Scene]) -> int:
    """:func:`seed_imported_labels` for each scene; returns the number of scenes seeded."""
    seeded = 0
    for scene in scenes:
        n = seed_imported_labels(store, scene)
        if n:
            log.info("scene %s: %d imported tracks are its first label revision", scene.scene_id, n)
            seeded += 1
    return seeded
