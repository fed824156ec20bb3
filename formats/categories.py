"""Label categories → nuScenes category names and KITTI object types (the one table).

Fathom's categories are free text (``"car"``, an importer's ``"vehicle.car"``, ``"REGULAR_VEHICLE"``,
``"Pickup Truck"``). An export looks each one up by its *key* (:func:`category_key`: lower
case, runs of spaces, hyphens and slashes → ``_``) in a table of the target dataset
(:data:`NUSCENES` / :data:`KITTI`): the default table below, updated by the caller's
``mapping`` (keys looked up the same way; a value ``None`` drops that category on purpose).
Every target name must be one of the dataset's names; a category with no entry is

- ``unmapped="refuse"`` (default): refused, :class:`UnmappedCategoryError` (a ``ValueError``)
  naming every such category;
- ``"pass"``: written as it is, whitespace runs → ``_`` (a blank name is refused; nuscenes-devkit cannot draw a box
  whose category is not in its colour map: ``render_sample_data`` raises ``KeyError``);
- ``"drop"``: its tracks are left out of the export.

Default table (what is not listed is refused): the synthetic rigs' categories
(:mod:`engine.sim.road` ``car``, ``pedestrian``, ``pole``, ``building``; the harbor rig's
``wreck``), the datasets' own names (either spelling: ``vehicle.car`` and ``Car`` map to
themselves and to each other where the meaning is the same), nuScenes' detection classes,
KITTI types as :mod:`formats.import_kitti` writes them (lower case), common Argoverse 2 and
PandaSet names and a few plain words. Choices worth knowing:

- ``pole`` and ``building`` → ``static.manmade``, ``wreck`` → ``static.other``: nuScenes'
  lidarseg classes (its annotators' guide puts poles and buildings in ``static.manmade``);
  the devkit draws them, its detection evaluation ignores them.
- KITTI: ``pole`` and ``wreck`` → ``Misc``; ``building`` is dropped (KITTI labels no
  structures). ``van`` → ``vehicle.car`` and pick-ups → ``vehicle.truck`` (nuScenes' guide);
  ``cyclist`` → ``vehicle.bicycle`` (nuScenes boxes the bicycle with its rider).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterable, Literal, Mapping, get_args

Unmapped = Literal["refuse", "pass", "drop"]
UNMAPPED_OPTIONS: tuple[str, ...] = get_args(Unmapped)

# nuscenes-devkit's names (nuscenes.utils.color_map.get_colormap): the 23 annotated object
# classes, then the lidarseg background classes
NUSCENES_OBJECT_CATEGORIES: tuple[str, ...] = (
    "animal", "human.pedestrian.adult", "human.pedestrian.child", "human.pedestrian.construction_worker",
    "human.pedestrian.personal_mobility", "human.pedestrian.police_officer", "human.pedestrian.stroller",
    "human.pedestrian.wheelchair", "movable_object.barrier", "movable_object.debris",
    "movable_object.pushable_pullable", "movable_object.trafficcone", "static_object.bicycle_rack",
    "vehicle.bicycle", "vehicle.bus.bendy", "vehicle.bus.rigid", "vehicle.car", "vehicle.construction",
    "vehicle.emergency.ambulance", "vehicle.emergency.police", "vehicle.motorcycle", "vehicle.trailer",
    "vehicle.truck",
)
NUSCENES_LIDARSEG_CLASSES: tuple[str, ...] = (
    "noise", "flat.driveable_surface", "flat.other", "flat.sidewalk", "flat.terrain", "static.manmade",
    "static.other", "static.vegetation", "vehicle.ego",
)
KITTI_TYPES: tuple[str, ...] = ("Car", "Van", "Truck", "Pedestrian", "Person_sitting", "Cyclist", "Tram", "Misc")

_NUSCENES_DEFAULT: dict[str, str | None] = {
    # the synthetic rigs
    "car": "vehicle.car", "pedestrian": "human.pedestrian.adult", "pole": "static.manmade",
    "building": "static.manmade", "wreck": "static.other",
    # nuScenes detection classes, KITTI types, plain words
    "truck": "vehicle.truck", "bus": "vehicle.bus.rigid", "trailer": "vehicle.trailer",
    "construction_vehicle": "vehicle.construction", "bicycle": "vehicle.bicycle", "motorcycle": "vehicle.motorcycle",
    "barrier": "movable_object.barrier", "traffic_cone": "movable_object.trafficcone",
    "van": "vehicle.car", "person_sitting": "human.pedestrian.adult", "cyclist": "vehicle.bicycle",
    "person": "human.pedestrian.adult", "child": "human.pedestrian.child", "ambulance": "vehicle.emergency.ambulance",
    "police_car": "vehicle.emergency.police", "cone": "movable_object.trafficcone", "bicycle_rack":
    "static_object.bicycle_rack", "debris": "movable_object.debris", "stroller": "human.pedestrian.stroller",
    "wheelchair": "human.pedestrian.wheelchair", "dog": "animal",
    # Argoverse 2
    "regular_vehicle": "vehicle.car", "large_vehicle": "vehicle.truck", "box_truck": "vehicle.truck",
    "truck_cab": "vehicle.truck", "articulated_bus": "vehicle.bus.bendy", "school_bus": "vehicle.bus.rigid",
    "vehicular_trailer": "vehicle.trailer", "construction_cone": "movable_object.trafficcone",
    # PandaSet
    "pickup_truck": "vehicle.truck", "medium_sized_truck": "vehicle.truck", "semi_truck": "vehicle.truck",
    "other_vehicle_construction_vehicle": "vehicle.construction", "pedestrian_with_object": "human.pedestrian.adult",
    "personal_mobility_device": "human.pedestrian.personal_mobility", "cones": "movable_object.trafficcone",
    "road_barriers": "movable_object.barrier", "temporary_construction_barriers": "movable_object.barrier",
    "animals_bird": "animal", "animals_other": "animal",
}

_KITTI_DEFAULT: dict[str, str | None] = {
    # the synthetic rigs
    "car": "Car", "pedestrian": "Pedestrian", "pole": "Misc", "building": None, "wreck": "Misc",
    # nuScenes names of the same things
    "vehicle.car": "Car", "vehicle.truck": "Truck", "vehicle.trailer": "Misc", "human.pedestrian.adult": "Pedestrian",
    "human.pedestrian.child": "Pedestrian", "human.pedestrian.construction_worker": "Pedestrian",
    "human.pedestrian.police_officer": "Pedestrian", "static.manmade": "Misc", "static.other": "Misc",
    # plain words, Argoverse 2, PandaSet
    "person": "Pedestrian", "regular_vehicle": "Car", "box_truck": "Truck", "bicyclist": "Cyclist",
    "pedestrian_with_object": "Pedestrian", "semi_truck": "Truck",
}


def category_key(name: str) -> str:
    """The lookup key of a category name: lower case, runs of spaces, ``-`` and ``/`` → ``_``."""
    return re.sub(r"[\s\-/]+", "_", name.strip().lower())


class UnmappedCategoryError(ValueError):
    """Categories with no name in the target dataset. Attributes: ``dataset``, ``categories``
    (the names as the labels spell them, sorted)."""

    def __init__(self, dataset: str, categories: Iterable[str]):
        self.dataset = dataset
        self.categories = tuple(sorted(set(categories)))
        super().__init__(
            f"{dataset} has no category for {', '.join(map(repr, self.categories))}: map them (a categories "
            "mapping), or keep their names with unmapped='pass' or leave their tracks out with unmapped='drop'")


@dataclass(frozen=True)
class CategoryMap:
    """A dataset's names and the default table to them (keys are :func:`category_key` s).

    Attributes:
        dataset: the dataset's name, for messages. names: its category names.
        default: key → name, or ``None`` for a category left out on purpose.
    """

    dataset: str
    names: frozenset[str]
    default: Mapping[str, str | None] = field(repr=False)

    def __post_init__(self) -> None:
        bad = {v for v in self.default.values() if v is not None and v not in self.names}
        own = {category_key(n): n for n in self.names}
        if bad:
            raise ValueError(f"{self.dataset} table names {sorted(bad)}, not {self.dataset} names")
        object.__setattr__(self, "default", {**own, **self.default})

    def resolve(self, categories: Iterable[str], mapping: Mapping[str, str | None] | None = None,
                unmapped: Unmapped = "refuse") -> dict[str, str | None]:
        """Each distinct name of ``categories`` → the dataset's name, or ``None`` where its
        tracks are dropped (see the module docstring). ``ValueError`` for a bad ``unmapped``
        or a ``mapping`` value that is not a name of the dataset; :class:`UnmappedCategoryError`."""
        if unmapped not in UNMAPPED_OPTIONS:
            raise ValueError(f"unmapped must be one of {UNMAPPED_OPTIONS}, got {unmapped!r}")
        table = dict(self.default)
        if mapping:
            bad = sorted(f"{k!r}: {v!r}" for k, v in mapping.items() if v is not None and v not in self.names)
            if bad:
                raise ValueError(f"categories mapping: {', '.join(bad)} — values must be {self.dataset} names "
                                 f"({', '.join(sorted(self.names))}) or None")
            table.update({category_key(k): v for k, v in mapping.items()})
        out: dict[str, str | None] = {}
        missing = []
        for name in dict.fromkeys(categories):
            key = category_key(name)
            passed = re.sub(r"\s+", "_", name.strip())
            if key in table:
                out[name] = table[key]
            elif unmapped == "refuse" or (unmapped == "pass" and not passed):
                missing.append(name)
            else:
                out[name] = passed if unmapped == "pass" else None
        if missing:
            raise UnmappedCategoryError(self.dataset, missing)
        return out


NUSCENES = CategoryMap("nuScenes", frozenset(NUSCENES_OBJECT_CATEGORIES + NUSCENES_LIDARSEG_CLASSES),
                       _NUSCENES_DEFAULT)
KITTI = CategoryMap("KITTI", frozenset(KITTI_TYPES), _KITTI_DEFAULT)
