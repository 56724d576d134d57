"""Where the ACR model files come from: names, links and the help text every error message uses.

Plain strings (no torch, no ROS): the backend chooser, the checkpoint loader and the MANO loader
all quote these, so the advice is the same wherever a file is missing.
"""
from acr_ros.acr.hands import LEFT, RIGHT

CHECKPOINT_URL = "https://github.com/ZhengdiYu/Arbitrary-Hands-3D-Reconstruction"
CHECKPOINT_HELP = f"the ACR weights are wild.pkl, from the Google Drive link in the ACR README ({CHECKPOINT_URL})"

MANO_URL = "https://mano.is.tue.mpg.de"
MANO_FILES = {LEFT: "MANO_LEFT.pkl", RIGHT: "MANO_RIGHT.pkl"}
MANO_HELP = (f"MANO_LEFT.pkl and MANO_RIGHT.pkl come from {MANO_URL} (free registration, licence-gated: they "
             "are never redistributed with acr_ros), in mano_v1_2/models of the download")
