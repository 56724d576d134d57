"""What a person watching an output video would see of it."""
import cv2


def decoded_frames(path) -> int:
    """How many frames of a video file OpenCV decodes."""
    capture = cv2.VideoCapture(str(path))
    count = 0
    while capture.read()[0]:
        count += 1
    capture.release()
    return count
