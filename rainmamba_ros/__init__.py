"""rainmamba_ros: the thin ROS 2 side (node, image conversions, bag replay, diagnostics).

Importing this package does not import rclpy; only `derain_node` (and the bench) need it.
"""
