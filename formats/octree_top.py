"""The levels of an octree layer above its chunks (:mod:`formats.octree_build`), built while the
chunks are.

The chunk roots and their ancestors form a tree (:func:`upper_tree`) whose leaves are the chunk
roots. Selection is bottom-up (:mod:`engine.map_octree`): a node's points depend only on its
children's, so each inner node is one job, run as soon as its children's points are all
known: it takes its own points from them (:func:`~engine.map_octree.select_lod` on the node and
its children), which leaves the children's points final, and encodes the children. The root
is encoded last. A chunk root's points (:data:`ROOT`) are those its chunk's selection left it.

The result is that of one selection over the whole tree, whatever order the jobs ran in; the
encoded nodes come in the order of their parents in the tree, then the root.
"""

from __future__ import annotations

from concurrent.futures import FIRST_COMPLETED, Executor, Future, wait

import numpy as np

from engine.map_octree import select_lod
from formats.octree import encode_entries

COLUMNS = ("x", "y", "z", "intensity16", "r", "g", "b", "count", "first", "last")
ROOT = np.dtype([("x", "<i4"), ("y", "<i4"), ("z", "<i4"), ("intensity16", "<u2"), ("r", "u1"), ("g", "u1"),
                 ("b", "u1"), ("count", "<u4"), ("first", "<u4"), ("last", "<u4"), ("codes", "<i8")])  # a node's points
_RECORD = np.dtype((np.void, ROOT.itemsize))  # a ROOT row as bytes: NumPy copies these whole, not field by field


def upper_tree(chunks: list[tuple[int, int]]) -> dict[str, np.ndarray]:
    """Pre-order tree of the chunk roots ``(level, code prefix)`` (in code order) and their
    ancestors: ``levels``, ``prefixes``, ``parents`` (−1 for the root) ``(M,) int64`` and
    ``leaf`` ``(M,) bool``; its leaves are the chunk roots, in order."""
    rows: list[tuple[int, int, int, bool]] = []

    def visit(level: int, prefix: int, lo: int, hi: int, parent: int) -> None:
        me = len(rows)
        leaf = hi - lo == 1 and chunks[lo] == (level, prefix)
        rows.append((level, prefix, parent, leaf))
        if leaf:
            return
        child = [p >> (3 * (lv - level - 1)) for lv, p in chunks[lo:hi]]
        a = 0
        while a < len(child):
            b = a
            while b < len(child) and child[b] == child[a]:
                b += 1
            visit(level + 1, child[a], lo + a, lo + b, me)
            a = b

    if chunks:
        visit(0, 0, 0, len(chunks), -1)
    out = {n: np.array([r[i] for r in rows], np.int64) for i, n in enumerate(("levels", "prefixes", "parents"))}
    out["leaf"] = np.array([r[3] for r in rows], np.bool_)
    return out


class Top:
    """The nodes above ``chunks`` (``(level, prefix, points)`` in code order, at least one) and
    the chunk roots: give each chunk's root points (:meth:`add_chunk`, from one thread),
    :meth:`poll` now and then, then :meth:`finish`. Jobs run on ``threads``."""

    def __init__(self, chunks: list[tuple[int, int, int]], depth: int, side_q: int, grid_bits: int,
                 intensity_shift: int, threads: Executor) -> None:
        self.tree = upper_tree([(lv, p) for lv, p, _ in chunks])
        self._depth, self._side_q, self._grid_bits, self._shift = depth, side_q, grid_bits, intensity_shift
        self._threads = threads
        self._chunk_nodes = np.flatnonzero(self.tree["leaf"])
        self._children: list[list[int]] = [[] for _ in self.tree["levels"]]
        for node, parent in enumerate(self.tree["parents"]):
            if parent >= 0:
                self._children[parent].append(node)
        self._missing = [len(c) for c in self._children]  # children whose points are not known yet
        self._points: dict[int, np.ndarray] = {}  # known, not yet taken by the parent's job
        self._jobs: dict[int, Future] = {}
        self._encoded: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # by parent: its children's data, entries

    def add_chunk(self, k: int, root: np.ndarray) -> None:
        """Chunk ``k``'s root points (:data:`ROOT`, in code order)."""
        self._known(int(self._chunk_nodes[k]), root)

    def _known(self, node: int, points: np.ndarray) -> None:
        self._points[node] = points
        parent = int(self.tree["parents"][node])
        if parent >= 0:
            self._missing[parent] -= 1
            if not self._missing[parent]:
                kids = [self._points.pop(c) for c in self._children[parent]]
                self._jobs[parent] = self._threads.submit(self._select, parent, kids)

    def poll(self) -> None:
        """Take the results of the jobs done (their parents' jobs may start)."""
        for node in [n for n, job in self._jobs.items() if job.done()]:
            data, entries, points = self._jobs.pop(node).result()
            self._encoded[node] = data, entries
            self._known(node, points)

    def finish(self) -> tuple[list[np.ndarray], np.ndarray]:
        """Once every chunk's root is given: ``(data, ENTRY rows)`` of every node above the
        chunks and of the chunk roots, ``data`` in parts (uint8 arrays, to be written one after
        the other), offsets from the first part's start."""
        while self._jobs:
            wait(list(self._jobs.values()), return_when=FIRST_COMPLETED)
            self.poll()
        root = self._points.pop(0)
        parts = [self._encoded[n] for n in sorted(self._encoded)]
        parts.append(self._encode(root, np.zeros(len(root), np.int64), np.zeros(1, np.int64), [0]))
        starts = np.cumsum([0] + [len(data) for data, _ in parts[:-1]], dtype=np.uint64)
        for (_, entries), start in zip(parts, starts):
            entries["offset"] += start
        return [data for data, _ in parts], np.concatenate([entries for _, entries in parts])

    def _select(self, node: int, kids: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Node ``node``'s job: its points taken from its children's (``kids``, in order), the
        children encoded; ``(data, entries, the node's points)``."""
        rows = [node, *self._children[node]]
        joined = np.concatenate([k.view(_RECORD) for k in kids]).view(ROOT)
        ends = np.cumsum([len(k) for k in kids])
        mini = {"levels": self.tree["levels"][rows], "prefixes": self.tree["prefixes"][rows],
                "starts": np.concatenate([[0], ends - [len(k) for k in kids]]).astype(np.int64),
                "ends": np.concatenate([[ends[-1]], ends]).astype(np.int64),
                "parents": np.array([-1] + [0] * len(kids), np.int64), "leaf": np.arange(len(rows)) > 0}
        owner, taken = select_lod(joined["codes"], mini, self._depth, self._grid_bits)
        data, entries = self._encode(joined, owner, np.arange(1, len(rows)), rows[1:])
        return data, entries, joined.view(_RECORD)[taken].view(ROOT)

    def _encode(self, points: np.ndarray, owner: np.ndarray, which: np.ndarray, nodes: list[int]
                ) -> tuple[np.ndarray, np.ndarray]:
        """The tree's ``nodes`` encoded: node ``nodes[j]`` holds the ``points`` whose ``owner`` is
        ``which[j]``."""
        return encode_entries({c: points[c] for c in COLUMNS}, owner, which, self.tree["levels"][nodes],
                              self.tree["prefixes"][nodes], self._side_q, self._shift)


__all__ = ["COLUMNS", "ROOT", "Top", "upper_tree"]
