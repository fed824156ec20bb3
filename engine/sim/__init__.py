"""The synthetic sensor rig: deterministic (by seed) stand-ins for real drives and surveys.

Each scenario returns its ground truth (true poses, object tracks, which object each
point or pixel hit) beside the simulated sensor data, for tests and the demo.
"""
