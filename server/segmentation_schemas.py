"""Request and response bodies of the segmentation routes (pydantic).

Coordinates of 3D selections are the scene's world frame (metres, relative to the scene
origin, as the points); lasso polygons are pixels of the camera's image (u right, v down,
pixel centres at integers). Floats must be finite and polygons have at least 3 vertices
(422 naming the field otherwise).
"""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field

Finite = Annotated[float, Field(allow_inf_nan=False)]
Vec3 = tuple[Finite, Finite, Finite]
Polygon = Annotated[list[tuple[Finite, Finite]], Field(min_length=3, max_length=10_000)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SegClassModel(_Strict):
    id: int = Field(ge=0, le=0xFFFE, description="class id (uint16; 0 means unlabelled)")
    name: str = Field(min_length=1, max_length=200)
    color: tuple[int, int, int] = Field((128, 128, 128), description="display colour r, g, b (0..255)")


class ClassesBody(_Strict):
    classes: list[SegClassModel] = Field(min_length=1, max_length=0xFFFF)
    voxel_m: Finite | None = Field(None, gt=0, le=10, description="map voxel size (only while the map is empty)")


class Indices(_Strict):
    kind: Literal["indices"]
    indices: list[Annotated[int, Field(ge=0)]] = Field(max_length=10_000_000,
                                                        description="point indices (map: voxel indices)")


class Prism(_Strict):
    kind: Literal["prism"]
    polygon: Polygon = Field(description="top-down polygon, world (x, y) metres")
    z_min: Finite
    z_max: Finite


class Box(_Strict):
    kind: Literal["box"]
    center: Vec3
    size: Vec3 = Field(description="length, width, height (m)")
    rotation: tuple[Finite, Finite, Finite, Finite] = Field((1.0, 0.0, 0.0, 0.0), description="w, x, y, z")


class Sphere(_Strict):
    kind: Literal["sphere"]
    center: Vec3
    radius: Finite = Field(ge=0)


class Lasso(_Strict):
    kind: Literal["lasso"]
    camera: str = Field(min_length=1, max_length=200)
    polygon: Polygon = Field(description="image polygon, pixels (u, v)")


class Cuboids(_Strict):
    kind: Literal["cuboids"]
    track_ids: list[str] | None = Field(None, description="tracks to fill from (default: every track at the frame)")


Selection = Annotated[Union[Indices, Prism, Box, Sphere, Lasso, Cuboids], Field(discriminator="kind")]


class Edit(_Strict):
    frame: int | None = Field(None, ge=0, le=999_999, description="frame index; null: the map (static world)")
    selection: Selection
    class_id: int | None = Field(description="class to set; null: clear the frame's own label (the map and "
                                             "moving boxes decide again)")
    instance_id: int = Field(0, ge=0, le=0xFFFFFFFF)
    only_unlabelled: bool = Field(False, description="only points whose current class is 0")
    only_class: int | None = Field(None, ge=0, le=0xFFFE, description="only points of this current class")


class EditsBody(_Strict):
    edits: list[Edit] = Field(min_length=1, max_length=1000)


class SelectBody(_Strict):
    """A prism to try on one frame's points; nothing is written."""

    selection: Prism
    frame: Literal["world", "ego"] = Field("world", description="frame of the polygon and z range: world, or the "
                                                                  "frame's ego frame (as points?frame=ego)")
    lod: int = Field(0, ge=0, le=16, description="also give the selected rows of this level of detail")


class SelectResponse(BaseModel):
    scene_id: str
    frame_index: int
    frame: Literal["world", "ego"]
    points: int = Field(description="points of the frame (full resolution)")
    count: int = Field(description="points the prism selects")
    indices: list[int] = Field(description="the selected rows of the frame's points file, ascending (an edit's "
                                           "'indices' selection)")
    lod: int
    lod_points: int = Field(description="points of level lod")
    lod_indices: list[int] = Field(description="the selected positions within level lod's points, ascending")


class EditsResponse(BaseModel):
    scene_id: str
    revision: int
    written: list[dict] = Field(description="per edit: frame (null: map) and the number of points (voxels) written")


class SegmentationInfo(BaseModel):
    scene_id: str
    revision: int
    classes: list[SegClassModel]
    voxel_m: float
    instances: dict[str, int]
    frames: list[int] = Field(description="frames with labels of their own")
    map_voxels: bool = Field(description="the map layer holds labels")
