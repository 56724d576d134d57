"""ROS-free ACR inference library: preprocessing, network, MANO, camera, smoothing."""
