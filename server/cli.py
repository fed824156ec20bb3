"""The ``fathom`` command line: demo, simulate, prepare, import, inspect, export, serve, token."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def _cmd_simulate(args: argparse.Namespace) -> int:
    from server.simulate import write_harbor_log, write_road_log

    if args.scenario == "harbor":
        path, _ = write_harbor_log(args.out, seed=args.seed, duration_s=args.duration, hydrophones=args.hydrophones)
    else:
        path = write_road_log(args.out, seed=args.seed, duration_s=args.duration, preset=args.preset,
                              cameras=not args.no_cameras, lidar_format=args.lidar_format)
    print(f"fathom simulate: wrote raw log {path}")
    return 0


def _bag_options(args: argparse.Namespace):
    """The ``formats.ros.BagOptions`` of the bag arguments (:func:`_add_bag_options`)."""
    from formats.ros import BagOptions, parse_topic_options

    return BagOptions(topics=tuple(args.topics) if args.topics else None, reference=args.reference_sensor,
                      frame_rate_hz=args.frame_rate, pose_topic=args.pose_topic, base_frame=args.base_frame,
                      topic_options=parse_topic_options(args.topic_option))


def _bag_source(bag: str, scene_dir: Path, options, bag_options):
    """``(input, PrepareOptions)`` of a bag: the bag itself, read directly
    (``formats.ros.source``), or where that does not take it (VelodyneScan packets, files
    compressed whole: ``DirectReadUnsupported``) its raw log, converted once into
    ``SCENE_DIR.rawlog/``; what was found is reported on stderr."""
    from dataclasses import replace

    from formats.ros import raw_log_for_prepare
    from formats.ros.source import DirectReadUnsupported, bag_log

    try:
        report = bag_log(bag, bag_options)[1]
    except DirectReadUnsupported as exc:
        print(f"fathom: converting {bag} ({exc})", file=sys.stderr)
        return raw_log_for_prepare(bag, scene_dir, bag_options, stream=sys.stderr), options
    print(f"fathom: reading {bag} directly: {report.frames} frames", file=sys.stderr)
    for line in report.lines():
        print(f"  {line}", file=sys.stderr)
    return bag, replace(options, rosbag=bag_options)


def _cmd_prepare(args: argparse.Namespace) -> int:
    from engine.cuda import describe, resolve
    from formats.ros import bag_name, is_bag
    from server.prepare import PrepareOptions, Progress, prepare, read_source

    device = resolve(args.device)  # CudaUnavailableError for cuda without a GPU
    if args.device != "cpu":  # which device auto picked, and what cuda runs on
        print(f"fathom prepare: device {device} (CUDA: {describe()})", file=sys.stderr)
    options = PrepareOptions(colorize=not args.no_colorize, visibility=not args.no_visibility, device=device,
                             map=args.map, map_options=_map_options(args))
    out = Path(args.out)
    status = 0
    for log_dir in args.logs:
        source = options
        if is_bag(log_dir):  # read directly, or converted once into SCENE_DIR.rawlog/ beside the scene
            log_dir, source = _bag_source(log_dir, out if len(args.logs) == 1 else out / bag_name(log_dir),
                                          options, _bag_options(args))
        log = read_source(log_dir, source.rosbag)
        scene_dir = out if len(args.logs) == 1 else out / log.log_id
        summary = prepare(log_dir, scene_dir, options=source, workers=args.workers, dask=args.dask,
                          durable=args.fsync_frames, processes=args.processes,
                          progress=Progress(len(log.frames)).update)
        for line in summary.lines():
            print(line)
        status = status or (1 if summary.failed else 0)
    return status


def _map_options(args: argparse.Namespace):
    """The ``server.scene_map.MapOptions`` of the map arguments (:func:`_add_map_options`)."""
    from server.scene_map import MapOptions

    return MapOptions(voxel_m=args.map_voxel, moving=args.map_moving, copc=not args.no_copc)


def _add_map_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--map-voxel", type=float, default=0.02, metavar="M",
                        help="map voxel: points merged per voxel of this side, metres (default 0.02)")
    parser.add_argument("--map-moving", default="auto", choices=["auto", "labels", "filter", "off"],
                        help="moving objects: labels (moving tracks' boxes), filter (the dynamic-point filter), "
                             "auto (labels when the log has them, else the filter; default) or off")
    parser.add_argument("--no-copc", action="store_true", help="no COPC copy of the map layers")


def _cmd_map(args: argparse.Namespace) -> int:
    """Build or update the map of a prepared scene (poses: the frames' own)."""
    from server.scene_map import build_scene_map

    summary = build_scene_map(args.scene_dir, sonar_sensors=set(args.sonar), options=_map_options(args),
                              progress=lambda line: print(line, file=sys.stderr))
    for line in summary.lines():
        print(line)
    return 0


def _cmd_import(args: argparse.Namespace) -> int:
    from server.import_datasets import ImportOptions, import_jobs, run_imports

    options = ImportOptions(version=args.version, split=args.split, layout=args.layout,
                            annotations=None if args.annotations is None else Path(args.annotations),
                            images=not args.no_images, rosbag=_bag_options(args) if args.source == "rosbag" else None)
    jobs = import_jobs(args.source, args.src, args.scene, options)
    summary = run_imports(jobs, args.out, stream=sys.stderr)
    for line in summary.lines():
        print(line)
    return 1 if summary.failed else 0


def _cmd_inspect(args: argparse.Namespace) -> int:
    """A bag's topics and what Fathom will do with each (nothing written)."""
    from formats.ros import inspect_lines

    for line in inspect_lines(args.bag, _bag_options(args)):
        print(line)
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    """A prepared scene's current labels on disk as the HTTP exports give them: the cuboid labels
    as a nuScenes DATAROOT, the 2D tracks of its video cameras as KITTI 2D or COCO."""
    if args.format != "nuscenes":
        return _export_2d(args)
    from formats.export_nuscenes_dataroot import write_nuscenes_dataroot
    from formats.scene_store import Scene
    from server.boxes import interpolation_modes, tracks_from_document
    from server.config import Settings

    scene_dir = Path(args.scene_dir)
    scene = Scene.open(scene_dir)
    db = Path(args.label_db) if args.label_db else Settings(scenes_dir=scene_dir.parent).label_db_path
    revision, doc = (0, {"tracks": []}) if not db.exists() else _labels(db, scene.scene_id)
    if revision == 0:  # never served: the labels the server would start with
        doc = scene.read_imported_labels() or doc
    root = write_nuscenes_dataroot(args.out, scene, tracks_from_document(doc), version=args.version,
                                   unmapped=args.unmapped, complete=not args.tables_only,
                                   interpolation=interpolation_modes(doc))
    print(f"fathom export: {scene.scene_id} (label revision {revision}, {len(doc['tracks'])} tracks) → {root}")
    return 0


def _export_2d(args: argparse.Namespace) -> int:
    """The scene's 2D tracks as the HTTP COCO export reads them (:mod:`server.export_2d_files`)."""
    from server.export_2d_files import export_2d

    print(f"fathom export: {export_2d(args.scene_dir, args.format, args.out, args.label_db)}")
    return 0


def _cmd_prelabel(args: argparse.Namespace) -> int:
    """Store a detector's output as a prepared scene's pre-labels (what the upload route does)."""
    from engine.tracker import TrackerParams
    from formats.detections import SceneFrames, read_detections
    from formats.import_kitti import TRACKING_CALIB_KEYS, read_tracking_calib
    from formats.import_kitti_object import OBJECT_CALIB_KEYS
    from formats.scene_store import Scene
    from server.config import Settings
    from server.prelabel_store import PrelabelStore, build_prelabels

    scene_dir = Path(args.scene_dir)
    scene = Scene.open(scene_dir)
    reference = None
    if args.kitti_calib is not None:
        text = Path(args.kitti_calib).read_text(errors="replace")  # the object layout spells its keys R0_rect ...
        keys = OBJECT_CALIB_KEYS if "R0_rect" in text else TRACKING_CALIB_KEYS
        reference = read_tracking_calib(args.kitti_calib, keys).ego_from_reference
    elif args.camera is not None:
        if args.camera not in scene.cameras:
            raise ValueError(f"scene {scene.scene_id!r} has no camera {args.camera!r}; it has {sorted(scene.cameras)}")
        reference = scene.cameras[args.camera].ego_from_camera
    frames = SceneFrames.of(scene)
    detections = read_detections(args.detections, frames, args.format, samples=args.nuscenes_samples,
                                 reference=reference, coordinates=args.coordinates)
    prelabels, tracked = build_prelabels(frames, detections, args.track, TrackerParams(min_score=args.min_score))
    db = Path(args.label_db) if args.label_db else Settings(scenes_dir=scene_dir.parent).label_db_path
    store = PrelabelStore(db)
    try:
        store.replace(scene.scene_id, prelabels, f"{args.format or 'guessed format'} {Path(args.detections).name}",
                      len(detections), tracked)
    finally:
        store.close()
    how = "tracked" if tracked else "grouped by their track ids"
    print(f"fathom prelabel: {scene.scene_id}: {len(detections)} detections {how} into {len(prelabels)} pre-label "
          f"tracks in {db}")
    return 0


def _labels(db: Path, scene_id: str) -> tuple[int, dict]:
    from server.label_store import LabelStore

    store = LabelStore(db)
    try:
        return store.get(scene_id)
    finally:
        store.close()


def _cmd_serve(args: argparse.Namespace) -> int:
    from server.main import serve

    # only when given: Settings then still reads FATHOM_TOKENS_FILE from the environment
    extra = {"tokens_file": args.tokens_file} if args.tokens_file is not None else {}
    serve(args.scenes_dir, host=args.host, port=args.port, **extra)
    return 0


def _tokens_file(args: argparse.Namespace) -> Path:
    from server.tokens import default_tokens_file

    return args.tokens_file if args.tokens_file is not None else default_tokens_file()


def _cmd_token_create(args: argparse.Namespace) -> int:
    """Print the new token alone on stdout (for scripts), what was done on stderr."""
    from datetime import UTC, datetime

    from server.tokens import create_token, parse_expires

    path = _tokens_file(args)
    now = datetime.now(UTC)
    expires = parse_expires(args.expires, now) if args.expires else None
    token, info = create_token(path, args.role, args.name, expires, now=now)
    until = info.expires.isoformat() if info.expires else "never"
    print(f"fathom token: added {info.role} token {info.name!r} (id {info.id}, expires {until}) to {path}; "
          "only its SHA-256 is stored, so keep the token printed below now", file=sys.stderr)
    print(token)
    print(f"fathom token: serve with: fathom serve SCENES_DIR --tokens-file {path}", file=sys.stderr)
    return 0


def _cmd_token_list(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from server.tokens import list_tokens

    path = _tokens_file(args)
    infos = list_tokens(path)
    if not infos:
        print(f"fathom token: no tokens in {path}", file=sys.stderr)
        return 0
    now = datetime.now(UTC)
    rows = [("ID", "NAME", "ROLE", "CREATED", "EXPIRES", "STORED")] + [
        (i.id, i.name, i.role, i.created or "-",
         (i.expires.isoformat() + (" (expired)" if i.expires <= now else "")) if i.expires else "never",
         "plain token" if i.plain else "sha256")
        for i in infos
    ]
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    for row in rows:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip())
    return 0


def _cmd_token_revoke(args: argparse.Namespace) -> int:
    from server.tokens import revoke_token

    path = _tokens_file(args)
    info = revoke_token(path, args.name_or_id)
    print(f"fathom token: revoked {info.role} token {info.name!r} (id {info.id}) from {path}; "
          "a running server accepts it until restarted", file=sys.stderr)
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    """Generate the built-in synthetic log, prepare it and serve it with a fresh admin token.

    The token (name ``demo``, replacing the previous run's) is kept, as its SHA-256, in
    ``WORKDIR/tokens.json``, and printed with the viewer URL, with ``--no-serve`` too.
    """
    from formats.raw_log import read_log
    from formats.scene_store import Scene
    from server.config import Settings
    from server.imported_labels import seed_imported_labels
    from server.label_store import LabelStore
    from server.main import serve
    from server.prepare import Progress, prepare
    from server.simulate import write_road_log
    from server.tokens import create_token

    work = Path(args.workdir)
    log_dir, scenes = work / "log", work / "scenes"
    if not (log_dir / "log.json").exists():
        print(f"fathom demo: simulating a {args.duration:g} s drive into {log_dir}")
        write_road_log(log_dir, seed=0, duration_s=args.duration, preset=args.preset)
    scene_dir = scenes / "road-0"
    log = read_log(log_dir)
    summary = prepare(log_dir, scene_dir, progress=Progress(len(log.frames)).update)
    for line in summary.lines():
        print(line)
    # the scene's first label revision only (as the server does): a rerun keeps what annotators did since
    store = LabelStore(Settings(scenes_dir=scenes).label_db_path)
    try:
        seeded = seed_imported_labels(store, Scene.open(scene_dir))
    finally:
        store.close()
    if seeded:
        print(f"fathom demo: the {seeded} simulated tracks are the first label revision of {scene_dir.name}")
    tokens_file = work / "tokens.json"
    token, _ = create_token(tokens_file, "admin", "demo", replace=True)
    print(f"fathom demo: admin token (name 'demo', in {tokens_file}): {token}")
    print(f"fathom demo: viewer at http://{args.host}:{args.port}/viewer/{scene_dir.name}?token={token}")
    if args.no_serve:
        print(f"fathom demo: serve it with: fathom serve {scenes} --tokens-file {tokens_file} "
              f"--host {args.host} --port {args.port}")
        return 1 if summary.failed else 0
    serve(scenes, host=args.host, port=args.port, tokens_file=tokens_file)
    return 0


def build_parser() -> argparse.ArgumentParser:
    from server.import_datasets import SOURCES

    parser = argparse.ArgumentParser(prog="fathom", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="synthetic log → prepared scene → served on 127.0.0.1:8000")
    demo.add_argument("--workdir", default="fathom-demo", help="where the demo log and scenes go")
    demo.add_argument("--duration", type=float, default=2.0, help="seconds of drive to simulate")
    demo.add_argument("--preset", default="test", choices=["test", "road"],
                      help="rig size: 'test' (small, fast) or 'road' (2 LiDARs ~170 k points, 6 × 1920×1080 cameras)")
    demo.add_argument("--host", default="127.0.0.1")
    demo.add_argument("--port", type=int, default=8000)
    demo.add_argument("--no-serve", action="store_true", help="stop after preparing")
    demo.set_defaults(func=_cmd_demo)

    sim = sub.add_parser("simulate", help="write a synthetic raw log")
    sim.add_argument("--scenario", default="road", choices=["road", "harbor"])
    sim.add_argument("--out", required=True, help="raw-log directory to write")
    sim.add_argument("--seed", type=int, default=0)
    sim.add_argument("--duration", type=float, default=2.0, help="seconds (harbor: of pings at 2 Hz)")
    sim.add_argument("--preset", default="test", choices=["test", "road"])
    sim.add_argument("--no-cameras", action="store_true")
    sim.add_argument("--hydrophones", action="store_true",
                     help="harbor: also the hull hydrophone array's recording of two passing ships")
    sim.add_argument("--lidar-format", default="pcd", choices=["pcd", "pcap"],
                     help="road: one PCD per sweep, or one Velodyne pcap per LiDAR (HDL-32E roof, VLP-16 bumper)")
    sim.set_defaults(func=_cmd_simulate)

    prep = sub.add_parser("prepare", help="raw log(s) or ROS bag(s) → prepared scene(s)")
    prep.add_argument("logs", nargs="+", help="raw-log directories, or ROS bags (read directly; a bag of VelodyneScan "
                                              "packets is converted into SCENE_DIR.rawlog/)")
    prep.add_argument("--out", required=True, help="scene directory (one log) or parent directory (several)")
    prep.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                      help="local workers (default: the number of CPUs): threads, or processes with --processes")
    prep.add_argument("--processes", action="store_true", help="local workers are spawned processes")
    prep.add_argument("--dask", default=None, help="dask scheduler address tcp://host:port, or 'local'")
    prep.add_argument("--no-colorize", action="store_true")
    prep.add_argument("--no-visibility", action="store_true", help="no per-camera camera_mask column")
    prep.add_argument("--fsync-frames", action="store_true",
                      help="fsync each frame's files as written (default: once, before the manifest)")
    prep.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"],
                      help="where the per-point work runs: cpu (default), cuda (a GPU; an error without one) "
                           "or auto (cuda where a GPU is usable; says which it picked)")
    prep.add_argument("--map", action=argparse.BooleanOptionalAction, default=None,
                      help="the whole sequence's map as streamed level-of-detail tiles and COPC, in SCENE_DIR/map "
                           "(default: for a log with a LiDAR)")
    _add_map_options(prep)
    _add_bag_options(prep)
    prep.set_defaults(func=_cmd_prepare)

    imp = sub.add_parser("import", help="a dataset (nuScenes, KITTI, AV2, PandaSet, SFS, Scale, ROS bag) → raw log(s)",
                         description="One raw log per scene: --out itself for one scene, --out/NAME for several.")
    imp.add_argument("source", choices=SOURCES)
    imp.add_argument("src", help="the dataset: a dataroot, sequence, log directory or file (see the README)")
    imp.add_argument("--out", required=True, help="raw-log directory (one scene) or parent directory (several)")
    imp.add_argument("--scene", nargs="+", default=None, metavar="NAME",
                     help="scenes/sequences/logs to import (default: every one found)")
    imp.add_argument("--version", default=None, help="nuscenes: the table version (e.g. v1.0-mini)")
    imp.add_argument("--split", default="training", help="kitti, kitti-object: training or testing")
    imp.add_argument("--layout", default="per_frame", choices=["per_frame", "sequence"],
                     help="kitti-object: one log per frame, or the chosen frames as one log (one calibration)")
    imp.add_argument("--annotations", default=None, help="scale-legacy: the cuboid annotations JSON")
    imp.add_argument("--no-images", action="store_true", help="leave the camera images out")
    _add_bag_options(imp)
    imp.set_defaults(func=_cmd_import)

    insp = sub.add_parser("inspect", help="a ROS bag's topics, rates, time ranges and what Fathom will do with each")
    insp.add_argument("bag", help="a ROS 1 .bag, a ROS 2 bag directory, or a .db3/.mcap file")
    _add_bag_options(insp)
    insp.set_defaults(func=_cmd_inspect)

    exp = sub.add_parser("export", help="a prepared scene's labels on disk: nuScenes DATAROOT, KITTI 2D or COCO",
                         description="nuscenes: the cuboid labels as a nuScenes DATAROOT; kitti-2d, coco: the 2D "
                                     "tracks of the scene's video cameras (the documents the server keeps beside "
                                     "its label database) as KITTI 2D label files or a COCO JSON file.")
    exp.add_argument("format", choices=["nuscenes", "kitti-2d", "coco"])
    exp.add_argument("scene_dir", help="a prepared scene directory")
    exp.add_argument("--out", required=True,
                     help="the DATAROOT directory (nuscenes), the label directory (kitti-2d: OUT/CAMERA/NNNNNN.txt) "
                          "or the JSON file (coco) to write")
    exp.add_argument("--label-db", default=None,
                     help="the server's label database (default: labels.sqlite3 beside the scene directory)")
    exp.add_argument("--version", default="v1.0-fathom", help="nuscenes: the table version directory")
    exp.add_argument("--unmapped", default="refuse", choices=["refuse", "pass", "drop"],
                     help="nuscenes: categories with no nuScenes name: refuse (default), pass the name, or drop the "
                          "track")
    exp.add_argument("--tables-only", action="store_true", help="nuscenes: the tables without samples/")
    exp.set_defaults(func=_cmd_export)

    pre = sub.add_parser("prelabel", help="a detector's per-frame detections → a prepared scene's pre-label tracks")
    pre.add_argument("scene_dir", help="a prepared scene directory")
    pre.add_argument("detections", help="nuScenes results JSON, KITTI results file or directory, SFS, Arrow/Parquet")
    pre.add_argument("--format", default=None, choices=["nuscenes", "kitti", "sfs", "table"],
                     help="the detections' format (default: guessed from the name and first bytes)")
    pre.add_argument("--label-db", default=None,
                     help="the server's label database (default: labels.sqlite3 beside the scene directory)")
    pre.add_argument("--nuscenes-samples", default=None, metavar="SAMPLE_JSON",
                     help="nuscenes: the dataset's sample.json, for results on the original dataset's tokens")
    ref = pre.add_mutually_exclusive_group()
    ref.add_argument("--kitti-calib", default=None, help="kitti: the calibration file (tracking or object layout)")
    ref.add_argument("--camera", default=None, help="kitti: the scene camera whose frame is KITTI's reference camera")
    pre.add_argument("--coordinates", default="world", choices=["world", "ego"],
                     help="table: boxes in the scene's world frame (default) or each frame's ego frame")
    pre.add_argument("--track", action=argparse.BooleanOptionalAction, default=None,
                     help="run the 3D tracker (default: unless every detection has a track id)")
    pre.add_argument("--min-score", type=float, default=0.0, help="ignore detections scoring below")
    pre.set_defaults(func=_cmd_prelabel)

    mp = sub.add_parser("map", help="build or update a prepared scene's map (level-of-detail tiles, COPC)")
    mp.add_argument("scene_dir", help="a prepared scene directory")
    mp.add_argument("--sonar", nargs="*", default=[], metavar="NAME", help="point sensors that are sonars")
    _add_map_options(mp)
    mp.set_defaults(func=_cmd_map)

    serve = sub.add_parser("serve", help="serve prepared scenes over HTTP")
    serve.add_argument("scenes_dir")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--tokens-file", type=Path, default=None,
                       help="JSON/YAML tokens file, e.g. made by 'fathom token create' (default: $FATHOM_TOKENS_FILE)")
    serve.set_defaults(func=_cmd_serve)

    _add_token_parser(sub)
    return parser


def _add_bag_options(parser: argparse.ArgumentParser) -> None:
    """The options of a ROS bag input (``formats.ros.BagOptions``)."""
    bag = parser.add_argument_group("ROS bags")
    bag.add_argument("--topics", nargs="+", default=None, metavar="TOPIC",
                     help="sensor topics to use, in sensor order (default: every PointCloud2, VelodyneScan and "
                          "image topic)")
    bag.add_argument("--reference-sensor", default=None, metavar="TOPIC",
                     help="the topic whose messages cut frames (default: the first LiDAR topic)")
    bag.add_argument("--frame-rate", type=float, default=None, metavar="HZ",
                     help="frames at most this often: the reference message nearest each tick (default: every one)")
    bag.add_argument("--pose-topic", default=None, metavar="TOPIC",
                     help="the ego pose source (default: Odometry, PoseStamped, /tf, NavSatFix+Imu, in that order)")
    bag.add_argument("--base-frame", default="base_link", help="the vehicle frame (default base_link)")
    bag.add_argument("--topic-option", nargs=2, action="append", default=None, metavar=("TOPIC", "KEY=VALUE"),
                     help="per topic: name, frame, time (FIELD:UNIT:relative|absolute or none), model, calibration, "
                          "camera_info, row_readout_ns, max_fov_deg")


def _add_token_parser(sub: argparse._SubParsersAction) -> None:
    from server.auth import ROLES

    token = sub.add_parser("token", help="create, list or revoke API tokens in a tokens file")
    actions = token.add_subparsers(dest="token_command", required=True)
    files = argparse.ArgumentParser(add_help=False)
    files.add_argument("--tokens-file", type=Path, default=None,
                       help="the tokens file (default: $FATHOM_TOKENS_FILE, else ./fathom-tokens.json)")
    create = actions.add_parser("create", parents=[files], help="add a random token; prints it once")
    create.add_argument("--role", required=True, choices=ROLES,
                        help="viewer: read; annotator: + write labels; admin: + label history, rescans")
    create.add_argument("--name", default=None, help="who holds it, shown in the label history (default ROLE-ID)")
    create.add_argument("--expires", default=None,
                        help="a duration (90m, 12h, 30d, 2w) or an ISO 8601 date/time, UTC unless zoned "
                             "(default: never)")
    create.set_defaults(func=_cmd_token_create)
    actions.add_parser("list", parents=[files], help="list the tokens' ids, names, roles, expiry").set_defaults(
        func=_cmd_token_list)
    revoke = actions.add_parser("revoke", parents=[files], help="remove a token by name or id")
    revoke.add_argument("name_or_id")
    revoke.set_defaults(func=_cmd_token_revoke)


def main(argv: list[str] | None = None) -> int:
    from engine.cuda import CudaUnavailableError
    from formats.errors import FormatError
    from server.auth import TokensError

    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (TokensError, FormatError, ValueError, ModuleNotFoundError, CudaUnavailableError) as exc:
        print(f"fathom {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
