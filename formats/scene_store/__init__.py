"""The prepared-scene store: what ``fathom prepare`` writes and ``fathom serve`` memory-maps.

Layout of one scene directory (format ``fathom-scene``, version 3)::

    SCENE_DIR/
      scene.json                 manifest: header + the list of finished frames (written last)
      labels.imported.json       the raw log's labels as the server's first label revision (optional)
      frames/000000.arrow        full-resolution points of frame 0 (Arrow IPC *file*, uncompressed)
      frames/000000.lod1.rows    level of detail 1, 2, ... (coarser voxel grids): row numbers
      frames/000000.boxes.json   label boxes at the frame timestamp (only for a labelled log)
      frames/000000.radar.arrow  radar returns of the frame (only for a log with radars)
      frames/000000.CAM_FRONT.jpg camera images, JPEG bytes as given
      frames/000000.json         the frame's manifest entry ("sidecar"), written after its files
      passive/HULL.arrow         a hydrophone array's bearing-time record (only for a log with hydrophones)

(Readers take every path from the manifest; all of a frame's files share one directory so
that one directory fsync makes their renames durable.)

``scene.json``::

    {"format": "fathom-scene", "version": 3, "scene_id": "road-01",
     "origin": {"enu_offset_m": [e, n, u], "geodetic": {"lat_deg", "lon_deg", "alt_m"} | null},
     "sensors": {"lidars": [{"name", "sensor_id", "ego_from_sensor": [qw qx qy qz tx ty tz]}],
                 "cameras": [{"name", "width", "height", "fx", "fy", "cx", "cy", "skew", "model",
                              "distortion": [...], "near_m", "shutter", "row_readout_ns",
                              "ego_from_camera": [qw qx qy qz tx ty tz]}],
                 "radars": [{"name", "sensor_id", "ego_from_sensor": [...]}]},   # only with radars
     "frames": [FRAME_ENTRY, ...],            # sorted by index
     "imported_labels": FILE,                 # optional
     "passive": [FILE + {"array", "rows"}]}   # optional: one per hydrophone array

The scene id is the name of the scene's directory (1-64 ASCII letters, digits, ``_-.``,
starting with a letter or digit): ``fathom prepare`` names the scene after the directory it
writes, and the server serves each directory under its name.

``imported_labels`` is the label document (the schema of the raw log's ``labels.json``, see
:func:`formats.raw_log.labels_document`) of a log that came with labels (an imported dataset,
the simulator's tracks): the server starts the scene's label history with it as revision 1
(operation ``import``) while the scene has no label revision yet, and never again after.

    FRAME_ENTRY = {"index", "timestamp_ns", "world_from_ego": [qw qx qy qz tx ty tz], "n_points",
                   "points": FILE, "lods": [FILE + {"level", "n_points"}, ...],
                   "images": {CAMERA: FILE + {"timestamp_ns"}},
                   "boxes": FILE,                       # optional
                   "radar": FILE + {"n_points"}}        # optional
    FILE = {"file": relative path, "bytes": size, "xxh3_128": hex digest (32 hex digits)}

Frames: the *world* frame is the local ENU frame whose origin sits at ``origin.enu_offset_m``;
``world_from_ego`` translations and all stored point positions are relative to it. Point
files hold one record batch with the columns below; a column that may take several types
has, in each file, the narrowest that holds that frame's values (the file's Arrow schema
says which; readers accept every listed type and widen where they need a fixed one)::

    xq yq zq         int32    positions quantised: x = offset + xq * scale      (required)
    intensity        uint8 | uint16 | float32: uint8 / uint16 when every value is a whole
                              number in its range (an 8- or 16-bit sensor: Velodyne), else
                              float32 as read (e.g. a PCD's fractional F4 intensities) (optional)
    r g b            uint8    colour (optional, all three)
    time_offset_ns   int32    firing time minus the frame timestamp, ns, so within ±2.147 s
                              (optional; add it to the int64 frame timestamp as int64)
    sensor_id        uint8    index into sensors.lidars (optional)
    ring             uint8 | uint16   laser / beam number (optional)
    camera_mask      uint8 | uint16 | uint32   bit k set: camera k of sensors.cameras sees
                              the point — it projects into that camera's image of this frame
                              and survives its z-buffer (engine.zbuffer); 0 for no camera
                              (optional; so a scene has at most 32 cameras, and a frame whose
                              points only cameras 0-7 see has uint8)
    box_id           int8 | int16 | int32   index into the "boxes" list of the frame's boxes
                              file, the box holding the point at its own firing time; -1 for
                              none (optional; int8 while the ids are below 128)

with the quantisation in the schema metadata key ``fathom.quantisation`` as JSON
``{"scale": [sx, sy, sz], "offset": [ox, oy, oz]}`` (metres, like Potree's and LAS's
scale/offset; ``fathom prepare`` uses 1 mm and the per-axis minimum rounded down to it):
``xq = rint((x - offset) / scale)``, rounding half to even, computed from float64 positions.
Build tables with :func:`points_table`. Positions are not stored as floats: :meth:`Scene.points`
adds float32 ``x y z`` columns computed on read, each the float32 nearest to the float64
``offset + xq * scale`` (so within half a step of the position prepared, plus float32's
rounding), and :func:`positions` gives that float64 sum. Version 2 also stored float32
``x y z`` (the float32 of the unquantised position) and fixed-width columns: 46 bytes per point
of a road frame with every column; version 3 stores 24 (two LiDARs, six cameras, fewer than
128 boxes, 8-bit intensities as a Velodyne reports them; 27 with float32 intensities).
Opening or resuming a version-2 scene raises :class:`FormatError` (prepare the log again
into a new directory).

Levels of detail are row subsets of the full table, stored as the rows alone: a ``.rows`` file
is the level's row numbers in the frame's points file, strictly increasing, as little-endian
uint32 (``4 × n_points`` bytes, no header). :meth:`Scene.stored_points` gathers a level from the
full table (:func:`take_rows`), so a level has every column, the quantisation, and only keys
of the full table — and costs 4 bytes per point on disk instead of a copy of each row.

The boxes file (:class:`FrameBoxes`) holds the label tracks that exist at the frame timestamp,
interpolated there (tracks are not extrapolated beyond their keyframes)::

    {"timestamp_ns": t, "boxes": [{"track_id", "category", "size": [l, w, h],
                                   "world": {"center": [x, y, z], "rotation": [qw, qx, qy, qz]},
                                   "ego": {"center": [...], "rotation": [...]}}]}

``world`` is the scene's world frame (relative to the origin, like the points), ``ego`` the
ego frame at the frame timestamp; rotations are box → frame. It is one of the frame's files:
written atomically before the sidecar and listed with its size and digest.

The radar file (a log with radars) is an Arrow IPC file of one record batch, a row per
radar return of the frame, all radars together, never mixed into the points or their levels
of detail (:mod:`formats.scene_store.radar`)::

    xq yq zq                 int32    world positions, quantised as the points are (own metadata)
    radial_velocity_mps      float32  range rate as measured (m/s, positive receding)
    radial_velocity_comp_mps float32  ego motion removed (0 for a static target; engine.radar)
    rcs_dbsm                 float32  radar cross-section (dBsm)
    sensor_id                uint8    index into sensors.radars
    time_offset_ns           int32    the radar's scan time minus the frame timestamp

Each return is moved to the world frame with the ego pose at its scan's time (radars scan
unsynchronised with the LiDARs). :meth:`Scene.radar` reads it with float32 ``x y z`` added.

A passive layer (a log with hydrophone arrays) is one array's bearing-time record over its
whole recording, not a frame's: an Arrow IPC file of ``time_ns`` (int64, each record frame's
middle) and ``power`` (``fixed_size_list<float32>[B]``, band power per beam), its azimuth grid,
band, array name and acoustic centre (ego frame) in the schema metadata
(:mod:`formats.scene_store.passive`); :meth:`Scene.passive_record` reads one. The layers are
written by :meth:`SceneWriter.finalize`, before the manifest that lists them.

Atomicity, durability and resumability: every file is written to a temporary file in its
directory and renamed over its final name (``os.replace``), so no reader ever sees half a
file. A frame's sidecar ``frames/NNNNNN.json`` is written after its data files (and removed
first when a frame is rewritten), and a frame counts as *finished* only when its sidecar
exists and every file it names exists with the recorded size and digest. Each digest is
computed once, from the bytes while they are written.

Digests are XXH3-128 (``xxhash.xxh3_128``, 32 hex digits; ~0.3 ms per 10 MB where SHA-256
takes ~6 ms). They guard against accidents, not attackers: a torn, short or zeroed file
after a crash is caught on resume, and the server uses them as ETags. They are not
tamper-proofing — anyone who can write the scene directory can rewrite its manifest too.
Version 1 of the format recorded SHA-256 (key ``sha256``); opening or resuming a version-1
scene raises :class:`FormatError` (prepare the log again into a new directory).

Frame files are not fsynced by default. They are derived data whose digests are recorded and
checked on resume: after a power loss a frame file may come back empty, short or zeroed even
though its rename survived, and its sidecar may be lost or torn — each of these makes the
frame unfinished (digest mismatch, unreadable or missing sidecar), so the resumed job redoes
exactly those frames. A per-file fsync would only move that redo into a slower first run.
The commit point is the manifest: :meth:`SceneWriter.finalize` makes the files of every
frame it lists durable (one ``syncfs`` of the scene's filesystem on Linux, else an fsync
per file and directory), then writes ``scene.json`` atomically with fsync of the file and
the directory, so a durable manifest never names data that is not on disk. A frame's points
file (megabytes, written once and not read back by the job) goes to disk with direct I/O
where the filesystem offers it (Linux ``O_DIRECT``: serialised into a page-aligned buffer
that each writing thread reuses, written from there by the device, no page-cache copy); the
thread waits for the device instead of copying, so the other workers compute meanwhile, and
the final sync finds that data already written. Other files (and points files where direct
I/O is refused) are written through the page cache, each starting its write-back as soon
as it is written (Linux ``sync_file_range``, not waited for). ``SceneWriter(durable=True)``
(``fathom prepare --fsync-frames``) fsyncs each frame's files and directory before its
sidecar instead, for those who want each sidecar to mean "on disk" on its own.

:meth:`SceneWriter.finished_entries` answers which frames a resumed job may skip
(verifying their digests); :meth:`SceneWriter.finalize` rewrites ``scene.json`` with all
finished frames, trusting the entries it is given (those a job wrote or verified itself) and
verifying only the others (call it at the end of a job, or after each batch to publish frames
incrementally). Frames are independent, so worker processes may each build a ``SceneWriter``
on the same directory and header and write different frames concurrently; only ``finalize``
must run in one place.

Reading: :meth:`Scene.open` validates the manifest (paths may never leave the scene directory,
symlinks included), :meth:`Scene.stored_points` memory-maps a frame's Arrow file and returns a
table whose buffers point into the mapping (zero-copy), or a level of detail gathered from
it; :meth:`Scene.points` adds the float32 ``x y z`` columns.
"""

from __future__ import annotations

from formats.rig import NAME_RULE, Lidar, SceneOrigin, camera_to_json, pose_to_json, valid_name
from formats.scene_store.boxes import FrameBoxes
from formats.scene_store.durable import atomic_write, write_arrow_file
from formats.scene_store.manifest import (
    FORMAT_NAME,
    FORMAT_VERSION,
    IMPORTED_LABELS,
    MANIFEST,
    FrameEntry,
    PassiveLayer,
    StoredFile,
    read_manifest,
)
from formats.scene_store.passive import PassiveRecord, passive_table, read_passive
from formats.scene_store.points import (
    COLUMN_TYPES,
    MAX_CAMERAS,
    QUANTISED_COLUMNS,
    REQUIRED_COLUMNS,
    STORED_TYPES,
    XYZ_COLUMNS,
    arrow_array,
    check_points_schema,
    column_values,
    points_table,
    positions,
    take_rows,
    with_xyz,
)
from formats.scene_store.quantise import QUANT_KEY, quantisation
from formats.scene_store.radar import RADAR_COLUMNS, check_radar_schema, radar_table, radar_with_xyz
from formats.scene_store.reader import Scene
from formats.scene_store.writer import SceneWriter

__all__ = [
    "COLUMN_TYPES", "FORMAT_NAME", "FORMAT_VERSION", "IMPORTED_LABELS", "MANIFEST", "MAX_CAMERAS", "NAME_RULE",
    "QUANT_KEY", "QUANTISED_COLUMNS", "RADAR_COLUMNS", "REQUIRED_COLUMNS", "STORED_TYPES", "XYZ_COLUMNS", "FrameBoxes",
    "FrameEntry", "Lidar", "PassiveLayer", "PassiveRecord", "Scene", "SceneOrigin", "SceneWriter", "StoredFile",
    "arrow_array", "atomic_write", "camera_to_json", "check_points_schema", "check_radar_schema", "column_values",
    "passive_table", "points_table", "pose_to_json", "positions", "quantisation", "radar_table", "radar_with_xyz",
    "read_manifest", "read_passive", "take_rows", "valid_name", "with_xyz", "write_arrow_file",
]
