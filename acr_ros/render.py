"""Draws hand results onto a BGR image, headless on the CPU (OpenCV + numpy; no display, no OpenGL).

    overlay = draw_hands(bgr, frame_result, faces={"left": faces_l, "right": faces_r})

A hand with vertices and faces is drawn as a shaded mesh: vertices projected with the frame's
intrinsics, triangles painter-sorted far to near, two-sided Lambert shading, blended with alpha 0.9
over the image like the official ACR renderer. Otherwise (MediaPipe, or no faces) a skeleton is
drawn along JOINT_PARENTS. Colours are ACR's (SIDE_COLOURS below). A small label (side
and score) sits above each hand.

With retargeting, beside(overlay, robot_views(retargeter), link frames per side) puts a panel per
robot hand beside the overlay (docs/teleoperation.md#pictures).

Only the pixels of each hand's bounding box are touched (no full-frame blend, no resize): a
778-vertex MANO hand on a 1080p frame takes about 2-3 ms (see test_render.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional

import cv2
import numpy as np

from acr_ros.acr.hands import JOINT_PARENTS, LEFT, RIGHT, CameraIntrinsics, FrameResult, HandResult

# ACR's colours (RGB 0-1), used for overlays and RViz markers alike.
SIDE_COLOURS = {LEFT: (0.46, 0.59, 0.64), RIGHT: (0.94, 0.71, 0.53)}

COLOURS_BGR = {side: tuple(int(round(255 * c)) for c in reversed(rgb)) for side, rgb in SIDE_COLOURS.items()}

MESH_ALPHA = 0.9
_AMBIENT = 0.35
_LIGHT = np.array([0.25, -0.35, -1.0]) / np.linalg.norm([0.25, -0.35, -1.0])  # from above-left of the camera
_SHIFT = 4  # fixed-point bits of the polygon coordinates (sub-pixel accuracy)
# Projected points are clipped to +-_LIMIT px: OpenCV takes int32 fixed-point coordinates, and a
# wild but finite point (e.g. 3e8 px) would overflow them; anything this far out is off-image anyway.
_LIMIT = float(1 << 20)


def _faces_for(faces: Optional[Mapping], side: str) -> Optional[np.ndarray]:
    f = None if faces is None else faces.get(side)
    if f is None:
        return None
    f = np.asarray(f)
    return f if f.ndim == 2 and f.shape[1] == 3 and len(f) else None


def fit_intrinsics(joints: np.ndarray, keypoints: np.ndarray) -> Optional[CameraIntrinsics]:
    """Pinhole K (fx = fy) that best maps joints to keypoints (least squares); None if degenerate.

    Used when a FrameResult carries no intrinsics: the mesh then still lands on the keypoints.
    """
    j = np.asarray(joints, dtype=np.float64)
    uv = np.asarray(keypoints, dtype=np.float64)
    ok = np.isfinite(j).all(1) & np.isfinite(uv).all(1) & (j[:, 2] > 1e-6)
    if ok.sum() < 3:
        return None
    x, y = j[ok, 0] / j[ok, 2], j[ok, 1] / j[ok, 2]
    n = int(ok.sum())
    a = np.zeros((2 * n, 3))
    a[:n, 0], a[:n, 1] = x, 1.0
    a[n:, 0], a[n:, 2] = y, 1.0
    b = np.concatenate([uv[ok, 0], uv[ok, 1]])
    sol, *_ = np.linalg.lstsq(a, b, rcond=None)
    f, cx, cy = sol
    if not np.isfinite(sol).all() or f <= 0:
        return None
    return CameraIntrinsics(float(f), float(f), float(cx), float(cy))


def _scale(image: np.ndarray) -> float:
    """Drawing scale: 1 at 720p."""
    return max(min(image.shape[0], image.shape[1]) / 720.0, 0.35)


def draw_mesh(image: np.ndarray, vertices: np.ndarray, faces: np.ndarray, k: CameraIntrinsics,
              colour_bgr: tuple, alpha: float = MESH_ALPHA, cull: bool = True
              ) -> Optional[tuple[int, int, int, int]]:
    """Draws a shaded mesh in place; returns the touched box (x0, y0, x1, y1) or None if not visible.

    cull: skip the faces turned away from the camera (about half of a closed mesh's).
    """
    v = np.asarray(vertices, dtype=np.float64)
    if not np.isfinite(v).all() or v[:, 2].min() <= 1e-3:
        return None
    h, w = image.shape[:2]
    uv = np.clip(k.project(v), -_LIMIT, _LIMIT)
    x0, y0 = np.floor(uv.min(axis=0)).astype(int)
    x1, y1 = np.ceil(uv.max(axis=0)).astype(int) + 1
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if x1 <= x0 or y1 <= y0:
        return None
    tri = v[faces]                                          # (F, 3, 3)
    normals = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    if cull:
        # Back-face culling, whatever the winding: the sign of the signed volume tells whether the
        # normals point out of the mesh; a face whose outward normal points away from the camera
        # (at the origin) is hidden by the front of a closed mesh. Skipped if the volume is ~0.
        volume = np.einsum("ij,ij->", tri[:, 0], normals)
        scale = np.abs(np.einsum("ij,ij->i", tri[:, 0], normals)).sum()
        if abs(volume) > 1e-3 * scale:
            front = np.einsum("ij,ij->i", normals, tri.mean(axis=1)) * np.sign(volume) < 0
            tri, faces, normals = tri[front], faces[front], normals[front]
            if not len(faces):
                return None
    normals /= np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)
    # Two-sided Lambert: independent of the winding of the faces (the MANO left hand is mirrored).
    shade = _AMBIENT + (1.0 - _AMBIENT) * np.abs(normals @ _LIGHT)
    colours = np.clip(shade[:, None] * np.asarray(colour_bgr, dtype=np.float64)[None], 1, 255).astype(np.uint8)
    order = np.argsort(-tri[:, :, 2].mean(axis=1), kind="stable")  # far first (painter's algorithm)
    pts = np.round((uv[faces] - (x0, y0)) * (1 << _SHIFT)).astype(np.int32)[order]
    colours = colours[order].tolist()
    canvas = np.zeros((y1 - y0, x1 - x0, 3), np.uint8)
    fill = cv2.fillConvexPoly
    for p, c in zip(pts, colours):
        fill(canvas, p, c, cv2.LINE_8, _SHIFT)
    mask = cv2.cvtColor(canvas, cv2.COLOR_BGR2GRAY)  # > 0 exactly on the mesh: shaded channels are >= 1
    region = image[y0:y1, x0:x1]
    blended = cv2.addWeighted(canvas, alpha, region, 1.0 - alpha, 0.0)
    cv2.copyTo(blended, mask, region)  # writes into the image through the view
    return x0, y0, x1, y1


def draw_skeleton(image: np.ndarray, keypoints: np.ndarray, colour_bgr: tuple) -> None:
    """Bones along JOINT_PARENTS in the side colour, joints as darker dots; in place."""
    kp = np.asarray(keypoints, dtype=np.float64)
    s = _scale(image)
    thickness = max(1, int(round(3 * s)))
    radius = max(2, int(round(4 * s)))
    finite = np.isfinite(kp).all(axis=1)
    pts = np.round(np.clip(np.nan_to_num(kp), -_LIMIT, _LIMIT) * (1 << _SHIFT)).astype(np.int64)
    for j, parent in enumerate(JOINT_PARENTS):
        if parent >= 0 and finite[j] and finite[parent]:
            cv2.line(image, tuple(pts[parent].tolist()), tuple(pts[j].tolist()), colour_bgr, thickness,
                     cv2.LINE_AA, _SHIFT)
    dark = tuple(int(c * 0.55) for c in colour_bgr)
    for j in np.flatnonzero(finite):
        cv2.circle(image, tuple(pts[j].tolist()), radius << _SHIFT, dark, -1, cv2.LINE_AA, _SHIFT)


def draw_label(image: np.ndarray, text: str, x: int, y: int, colour_bgr: tuple, size: float = 1.0) -> None:
    """A filled tag in the side colour with dark text, its bottom-left corner at (x, y); in place."""
    s = _scale(image) * size
    font, font_scale, thick = cv2.FONT_HERSHEY_SIMPLEX, 0.5 * s, max(1, int(round(s)))
    (tw, th), base = cv2.getTextSize(text, font, font_scale, thick)
    pad = max(2, int(round(3 * s)))
    h, w = image.shape[:2]
    x = int(np.clip(x, 0, max(w - tw - 2 * pad, 0)))
    y = int(np.clip(y, th + base + 2 * pad, h))
    cv2.rectangle(image, (x, y - th - base - 2 * pad), (x + tw + 2 * pad, y), colour_bgr, -1)
    cv2.putText(image, text, (x + pad, y - base - pad), font, font_scale, (32, 32, 32), thick, cv2.LINE_AA)


def draw_hand(image: np.ndarray, hand: HandResult, faces: Optional[np.ndarray] = None,
              intrinsics: Optional[CameraIntrinsics] = None, alpha: float = MESH_ALPHA,
              skeleton: Optional[bool] = None, label: bool = True) -> str:
    """Draws one hand in place; returns what was drawn: "mesh", "skeleton" or "mesh+skeleton"."""
    colour = COLOURS_BGR.get(hand.side, (0, 255, 0))
    drawn = []
    box = None
    if hand.vertices is not None and faces is not None:
        k = intrinsics or fit_intrinsics(hand.joints, hand.keypoints)
        if k is not None:
            box = draw_mesh(image, hand.vertices, faces, k, colour, alpha)
            if box is not None:
                drawn.append("mesh")
    if skeleton or (skeleton is None and not drawn):
        draw_skeleton(image, hand.keypoints, colour)
        drawn.append("skeleton")
    if label:
        kp = np.asarray(hand.keypoints, dtype=np.float64)
        kp = kp[np.isfinite(kp).all(axis=1)]
        if len(kp):
            x, y = kp[:, 0].min(), kp[:, 1].min()
            if box is not None:
                x, y = min(x, box[0]), min(y, box[1])
            draw_label(image, f"{hand.side} {hand.score:.2f}", int(x), int(y) - 4, colour)
    return "+".join(drawn)


def draw_hands(image: np.ndarray, result: FrameResult, faces: Optional[Mapping] = None, *, alpha: float = MESH_ALPHA,
               skeleton: Optional[bool] = None, label: bool = True, copy: bool = True) -> np.ndarray:
    """The image (BGR uint8) with every hand of result drawn; the input is left unchanged unless copy=False.

    faces: {"left": (F, 3), "right": (F, 3)} (acr_ros.backends.faces_by_side(backend)), or None.
    skeleton: None = only for hands without a mesh; True = always; False = never.
    Hands are drawn far to near, so the nearer hand covers the other.
    """
    out = np.array(image, dtype=np.uint8, copy=True) if copy else image
    if result is None or not result.hands:
        return out
    hands = sorted(result.hands, key=lambda h: -float(np.nan_to_num(np.asarray(h.joints)[:, 2].mean())))
    for hand in hands:
        draw_hand(out, hand, _faces_for(faces, hand.side), result.intrinsics, alpha, skeleton, label)
    return out


# Robot hands beside the overlay (acr_offline --retarget): the retargeted pose by forward kinematics of the
# URDF's link frames, drawn as lines between link origins; no meshes.
PANEL_ASPECT = 0.8          # robot panel width / height
PANEL_BACKGROUND = (40, 40, 40)
PANEL_PALM = (0.5, 0.62)    # where the palm point is drawn, as fractions of the panel's width and height
_TIP_BGR = (255, 255, 255)


@dataclass(frozen=True)
class RobotView:
    """How one side's robot hand is drawn (robot_view): its link tree, fingertips and a fixed view.

    The view is orthographic, fixed per robot and side, from the neutral pose: fingers up (from the palm point
    towards the knuckles of the fingers other than the thumb), the palm towards the viewer, so the robot reads
    like a hand held up to the camera palm first (a right hand's thumb on the right). The palm sits low in the
    panel and the fingers fit at full stretch in any pose.
    """
    side: str
    label: str
    tree: dict                  # child link -> parent link
    moving: frozenset           # the links that a joint turns (the fingers; the rest is drawn as the palm)
    tips: tuple                 # fingertip links, thumb first
    knuckles: tuple             # the first link of each finger of its own that a joint turns, thumb first
    palm_link: str              # the last link every finger's chain shares (it carries the palm)
    wrist: np.ndarray           # (3,) the palm's far end from the knuckles, in palm_link's frame
    axes: np.ndarray            # (3, 3) rows: the view's right, down and away-from-viewer in the base frame
    centre: np.ndarray          # (3,) the palm point, drawn at PANEL_PALM
    reach: float                # metres from the palm that no moving link's origin passes in any pose


def robot_view(retargeter, side: str, label: str = "") -> RobotView:
    """The RobotView of one side of a HandRetargeter (call it on the retargeter's thread)."""
    neutral = retargeter.neutral(side)
    palm = retargeter.palm(side)
    tree = retargeter.link_tree(side)
    tips = tuple(retargeter.fingertip_links(side))
    here = retargeter.link_frames(side, neutral)
    moved = retargeter.link_frames(side, neutral + 0.1)  # every joint turned: what moves is on a finger

    def turns(link: str) -> bool:
        return not np.allclose(here[link], moved[link], atol=1e-9)

    def chain(link: str) -> list:
        links = [link]
        while links[-1] in tree:
            links.append(tree[links[-1]])
        return links[::-1]

    chains = [chain(tip) for tip in tips]

    def knuckle(links: list) -> str:
        """Where the finger starts: its first link of its own (past the palm and a wrist, which every finger
        shares) that a joint turns."""
        return next(link for link in links if turns(link) and sum(link in c for c in chains) == 1)

    # From the knuckles, not the fingertips: a neutral pose may be half curled (LEAP's is).
    knuckle_links = tuple(knuckle(links) for links in chains)
    knuckles = np.stack([here[link][:3, 3] for link in knuckle_links[1:]])
    up = knuckles.mean(axis=0) - palm
    up /= np.linalg.norm(up)
    across = knuckles[0] - knuckles[-1]  # from the last finger to the index: towards the thumb side
    across -= (across @ up) * up
    across /= np.linalg.norm(across)
    # Palm towards the viewer: a right hand's thumb side is then on the right, a left hand's on the left.
    right = across if side == RIGHT else -across
    axes = np.stack([right, -up, np.cross(right, -up)])
    # A link origin that no joint moves is exact; one further out is at most the summed lengths of the links
    # on the way (a joint keeps its child's origin at a fixed distance from its parent's).
    bound = {}

    def reach_of(link: str) -> float:
        if link not in bound:
            origin = here[link][:3, 3]
            fixed = np.allclose(origin, moved[link][:3, 3], atol=1e-9) or link not in tree
            bound[link] = (np.linalg.norm(origin - palm) if fixed else
                           reach_of(tree[link]) + np.linalg.norm(origin - here[tree[link]][:3, 3]))
        return bound[link]

    # Links fixed to the base (Shadow's forearm) may leave the panel: the reach of the fingers sets the scale.
    reach = max(reach_of(link) for link in here if turns(link))
    # The palm point is halfway from the wrist to the knuckles (HandRetargeter.palm); the wrist moves with
    # the palm's link (Shadow's wrist joints turn it).
    wrist = 2 * palm - np.mean([here[link][:3, 3] for link in knuckle_links], axis=0)
    palm_link = [links[0] for links in zip(*chains) if len(set(links)) == 1][-1]
    wrist = np.linalg.solve(here[palm_link], np.append(wrist, 1.0))[:3]
    moving = frozenset(link for link in here if turns(link))
    return RobotView(side, label, tree, moving, tips, knuckle_links, palm_link, wrist, axes, palm, float(reach))


def robot_views(retargeter) -> dict:
    """side -> RobotView for every side of the retargeter, labelled with its robot."""
    settings = retargeter.settings
    label = settings.robot or Path(settings.config).stem
    return {side: robot_view(retargeter, side, label) for side in retargeter.sides}


def draw_robot_hand(view: RobotView, frames: Optional[Mapping], height: int) -> np.ndarray:
    """A BGR panel (height x PANEL_ASPECT height) of the robot hand whose link poses are `frames`
    (HandRetargeter.link_frames; None: the side is not tracked, an empty panel saying so).

    The palm is a dark patch spanning the wrist and the knuckles; the links that joints turn are lines from
    their origin to each child's, far to near and brighter nearer, with dots at their origins (the joints) in
    the darker side colour (as draw_skeleton's joints); fingertips are white-ringed dots. Links fixed to the
    base are left to the patch: their origins sit wherever the URDF's meshes needed them (LEAP's left palm
    link's is beyond the knuckles).
    """
    width = max(1, int(round(height * PANEL_ASPECT)))
    panel = np.full((height, width, 3), PANEL_BACKGROUND, np.uint8)
    colour = np.asarray(COLOURS_BGR.get(view.side, (0, 255, 0)), dtype=np.float64)
    dark = tuple(int(c * 0.55) for c in colour)
    s = _scale(panel)
    # Fingers point up, so the palm sits low and the reach spans the panel above it.
    pixels = height * 0.56 / max(view.reach, 1e-6)

    def project(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Base-frame points -> fixed-point pixels and nearness (+1 nearest the viewer, at the reach)."""
        view_points = (points - view.centre) @ view.axes.T
        uv = view_points[:, :2] * pixels + (width * PANEL_PALM[0], height * PANEL_PALM[1])
        pts = np.round(np.clip(uv, -_LIMIT, _LIMIT) * (1 << _SHIFT)).astype(np.int64)
        return pts, np.clip(-view_points[:, 2] / max(view.reach, 1e-6), -1, 1)

    if frames is not None:
        links = list(frames)
        pts, near = project(np.stack([frames[link][:3, 3] for link in links]))
        index = {link: i for i, link in enumerate(links)}
        knuckles = np.stack([frames[link][:3, 3] for link in view.knuckles])
        heel = 0.3 * (knuckles[1] - knuckles[-1])  # the wrist end, a little narrower than the knuckles
        wrist = frames[view.palm_link][:3, :3] @ view.wrist + frames[view.palm_link][:3, 3]
        palm, _ = project(np.concatenate([knuckles, [wrist - heel, wrist + heel]]))
        cv2.fillConvexPoly(panel, cv2.convexHull(palm.astype(np.int32)), tuple(int(c * 0.45) for c in colour),
                           cv2.LINE_AA, _SHIFT)
        thickness = max(2, int(round(9 * s)))
        bones = sorted(((child, parent) for child, parent in view.tree.items()
                        if child in index and parent in index and parent in view.moving),
                       key=lambda bone: near[index[bone[0]]] + near[index[bone[1]]])
        for child, parent in bones:
            i, j = index[child], index[parent]
            shade = 0.75 + 0.25 * (near[i] + near[j]) / 2
            cv2.line(panel, tuple(pts[j].tolist()), tuple(pts[i].tolist()),
                     tuple(np.clip(colour * shade, 0, 255).tolist()), thickness, cv2.LINE_AA, _SHIFT)
        radius = max(2, int(round(6 * s)))
        for i in np.argsort(near, kind="stable"):
            if links[i] in view.moving and links[i] not in view.tips:
                cv2.circle(panel, tuple(pts[i].tolist()), radius << _SHIFT, dark, -1, cv2.LINE_AA, _SHIFT)
        for tip in view.tips:
            if tip in index:
                centre = tuple(pts[index[tip]].tolist())
                cv2.circle(panel, centre, (2 * radius) << _SHIFT, _TIP_BGR, -1, cv2.LINE_AA, _SHIFT)
                cv2.circle(panel, centre, int(1.3 * radius) << _SHIFT, dark, -1, cv2.LINE_AA, _SHIFT)
    text = f"{view.label} {view.side}" if frames is not None else f"{view.label} {view.side}: no hand"
    draw_label(panel, text, int(round(8 * s)), int(round(48 * s)), tuple(colour.tolist()), size=1.8)
    return panel


def beside(overlay: np.ndarray, views: Mapping, frames: Mapping) -> np.ndarray:
    """[overlay | left robot | right robot]: the overlay with a robot panel per side of `views` (left first),
    each the overlay's height. frames: side -> HandRetargeter.link_frames of the retargeted pose; a side
    without frames (not tracked) gets an empty panel, so every picture of a video has one width."""
    height = overlay.shape[0]
    panels = [draw_robot_hand(views[side], frames.get(side), height) for side in (LEFT, RIGHT) if side in views]
    return np.concatenate([overlay] + panels, axis=1)
