"""acr_ros: real-time two-hand 3D reconstruction (ACR) for ROS 2.

The Python code and the rosidl-generated interfaces (acr_ros.msg) may live in two folders of
the same name (the pip set-up: source tree + generated modules in site-packages); extending
__path__ lets one import find both.
"""
__path__ = __import__("pkgutil").extend_path(__path__, __name__)
