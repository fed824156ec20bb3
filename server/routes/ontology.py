"""A scene's label ontology: its classes, their attributes and allowed values (GET: viewer;
PUT, DELETE: admin). While a scene has one, label writes whose categories or attributes are
outside it are refused with 422 naming them; without one anything goes. Setting an ontology
does not change stored labels (tracks outside it must be fixed when they are next written)."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Response

from server.deps import Admin, SceneDep, State, Viewer
from server.responses import errors
from server.schemas import Ontology

router = APIRouter(prefix="/v1", tags=["labels"])


@router.get("/scenes/{scene_id}/ontology", response_model=Ontology,
            responses=errors((404, "no such scene, or the scene has no ontology")))
def get_ontology(_: Viewer, scene: SceneDep, state: State) -> Ontology:
    ontology = state.labels.ontology(scene.scene_id)
    if ontology is None:
        raise HTTPException(404, f"scene {scene.scene_id!r} has no ontology (any category and attribute goes)")
    return Ontology.model_validate(ontology)


@router.put("/scenes/{scene_id}/ontology", response_model=Ontology, tags=["admin"],
            responses=errors(400, 403, 404, 413))
def put_ontology(_: Admin, scene: SceneDep, state: State, ontology: Ontology) -> Ontology:
    """Set (replace) the scene's ontology."""
    state.labels.set_ontology(scene.scene_id, ontology.model_dump(mode="json"))
    return ontology


@router.delete("/scenes/{scene_id}/ontology", status_code=204, response_class=Response, tags=["admin"],
               responses=errors(403, 404))
def delete_ontology(_: Admin, scene: SceneDep, state: State) -> Response:
    """Remove the scene's ontology: any category and attribute goes again."""
    state.labels.set_ontology(scene.scene_id, None)
    return Response(status_code=204)
