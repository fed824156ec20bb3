"""A scene's label ontology as a check on tracks: categories must be classes, attributes (of
the track and of its keyframes) must be the class's, with one of the listed values if any.
Without an ontology anything goes."""

from __future__ import annotations

from typing import Any

from server.errors import invalid

Loc = tuple[str | int, ...]


def _key(value: Any) -> tuple[str, Any]:
    """Compare values as JSON does: booleans apart from numbers, 1 == 1.0."""
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, (int, float)):
        return ("number", float(value))
    return (type(value).__name__, value if isinstance(value, str) else repr(value))


def _specs(attributes: list[dict[str, Any]]) -> dict[str, set[tuple[str, Any]] | None]:
    return {a["name"]: None if a.get("values") is None else {_key(v) for v in a["values"]} for a in attributes}


class OntologyCheck:
    """Checks tracks (stored JSON form) against an ontology (:class:`server.schemas.Ontology` JSON)."""

    def __init__(self, ontology: dict[str, Any]):
        self.classes = {c["name"]: (_specs(c.get("attributes", [])), _specs(c.get("keyframe_attributes", [])))
                        for c in ontology["classes"]}

    def check(self, track: dict[str, Any], loc: Loc) -> None:
        """Raise a 422 (``RequestValidationError``) naming the first category, attribute or
        value of ``track`` outside the ontology; ``loc`` is where the track is in the request."""
        category = track["category"]
        if category not in self.classes:
            raise invalid(loc + ("category",), f"track {track['id']!r}: category {category!r} is not a class of the "
                          f"scene's ontology ({', '.join(sorted(self.classes)) or 'no classes'})", category)
        track_specs, keyframe_specs = self.classes[category]
        self._attributes(track, track.get("attributes", {}), track_specs, loc + ("attributes",), "")
        for j, k in enumerate(track["keyframes"]):
            self._attributes(track, k.get("attributes", {}), keyframe_specs, loc + ("keyframes", j, "attributes"),
                             f"keyframe {j} ")

    @staticmethod
    def _attributes(track: dict[str, Any], attributes: dict[str, Any], specs: dict[str, set | None], loc: Loc,
                    where: str) -> None:
        for name, value in attributes.items():
            if name not in specs:
                raise invalid(loc + (name,), f"track {track['id']!r}: {where}attribute {name!r} is not defined for "
                              f"class {track['category']!r} ({', '.join(sorted(specs)) or 'none are'})", name)
            allowed = specs[name]
            if allowed is not None and _key(value) not in allowed:
                raise invalid(loc + (name,), f"track {track['id']!r}: {where}attribute {name!r} = {value!r} is not "
                              f"one of the values class {track['category']!r} allows", value)


def checker(ontology: dict[str, Any] | None) -> OntologyCheck | None:
    """The check of a stored ontology (None: no ontology, no check)."""
    return None if ontology is None else OntologyCheck(ontology)
