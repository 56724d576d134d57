"""The hands node's pieces: parameters, inputs (subscriptions and QoS), diagnostics (acr_ros.hands_node
is the lifecycle shell that joins them)."""
