"""Random makeup looks painted onto a `synth_face.Canvas` (foundation, contour + highlighter,
blush, eyeshadow, eyeliner, brow pencil, lipstick + gloss).

Each product lands on its face region (found from the `Face` geometry), so removing it needs
to know where the regions are; colours and strengths are random per face, so it is never one
global colour shift. Like the course data (a makeup-transfer GAN), looks are sometimes tidy and
sometimes bad: too strong, smudged, overdrawn or off-place. Products change `albedo` (colour),
`tex` (foundation hides some pores) and `shade` (gloss), in place.
"""

from __future__ import annotations

import math

import numpy as np

from demakeup_dist.data.synth_face import (F32, Canvas, Face, brow_distance, brow_window, bump, edge, eye_frame,
                                           face_distance, lip_distance, noise_field, rgb)

LIPSTICKS = rgb([[0.75, 0.05, 0.10], [0.55, 0.02, 0.08], [0.90, 0.40, 0.55], [0.50, 0.10, 0.30],
                 [0.75, 0.50, 0.42], [0.95, 0.40, 0.30], [0.40, 0.10, 0.25], [0.95, 0.30, 0.10]])
SHADOWS = rgb([[0.45, 0.28, 0.18], [0.70, 0.50, 0.30], [0.80, 0.65, 0.30], [0.45, 0.20, 0.50],
               [0.20, 0.30, 0.65], [0.20, 0.45, 0.30], [0.85, 0.45, 0.55], [0.12, 0.10, 0.10]])
LINERS = rgb([[0.03, 0.03, 0.04], [0.20, 0.12, 0.07], [0.05, 0.07, 0.25], [0.10, 0.25, 0.12]])
BLUSHES = rgb([[0.95, 0.45, 0.55], [0.98, 0.55, 0.45], [0.95, 0.40, 0.35], [0.85, 0.35, 0.45]])

PRODUCT_P = np.array([0.95, 0.45, 0.85, 0.9, 0.65, 0.4, 0.95])  # how often each product is worn
BAD_P_MESSY, BAD_P_TIDY = 0.6, 0.12  # per-product chance of a bad application, messy / tidy looks
MESSY_LOOK_P = 0.35


def apply_makeup(rng: np.random.Generator, cv: Canvas, f: Face) -> None:
    """Paint a random look (at least two products, each tidy or bad) onto `cv` in place."""
    painters = (_foundation, _contour, _blush, _eyeshadow, _eyeliner, _brow_pencil, _lipstick)
    messy = rng.random() < MESSY_LOOK_P
    use = rng.random(len(painters)) < PRODUCT_P
    if use.sum() < 2:
        use[[3, 6]] = True
    bad = rng.random(len(painters)) < (BAD_P_MESSY if messy else BAD_P_TIDY)
    for paint, worn, is_bad in zip(painters, use, bad):
        if worn:
            paint(rng, cv, f, bool(is_bad))


def _pick(rng: np.random.Generator, palette: np.ndarray, jitter: float = 0.08) -> np.ndarray:
    return rgb(palette[rng.integers(len(palette))] * (1 + rng.normal(0, jitter, 3)))


def _smudge(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """Blotchy strength multiplier around 1 for smudged products."""
    return np.clip(F32(1.0) + F32(0.35) * noise_field(rng, 5, shape), 0.3, 1.5)


def _foundation(rng: np.random.Generator, cv: Canvas, f: Face, bad: bool) -> None:
    """Skin-coloured tint over the face (not eyes/brows/lips), blended down the neck; bad =
    mismatched colour stopping at a hard jaw line.

    A tidy foundation is a matched shade (a 2-6% tone change): blended down the neck, it leaves no
    bare skin to tell the true tone from, so a stronger tidy shift could not be undone by any network
    (before synth version 2 it was 12-25% and held 70% of the makeup error: docs/results.md). A bad one
    is a wrong shade (20-35% off) whose mismatch shows against the bare neck, which is what a network can
    learn to correct; its undertone varies by 5% per channel (12% before version 2 painted green and
    blue faces, which no foundation does)."""
    win = cv.window(-f.a - 0.1, f.a + 0.1, -f.b - 0.05, f.b + 0.4)
    X, Y = cv.local(win)
    d = face_distance(f, X, Y)
    if bad:
        mask, strength, shift, tint = edge(d, 2 * cv.px), rng.uniform(0.6, 0.85), rng.uniform(0.2, 0.35), 0.05
    else:
        neck = cv.skin[win] * np.clip((F32(f.b + 0.35) - Y) / F32(0.4), 0, 1) * (Y > 0)
        mask = np.maximum(edge(d + F32(0.03), 0.08), neck)
        strength, shift, tint = rng.uniform(0.6, 0.9), rng.uniform(0.02, 0.06), 0.02
    alpha = mask * (1 - cv.features[win]) * F32(strength)
    shift *= rng.choice([-1, 1])
    # the absolute part makes a shade change as visible on dark skin as on light skin
    cv.paint(win, alpha, rgb((f.skin * (1 + shift) + F32(0.15 * shift)) * (1 + rng.normal(0, tint, 3))),
             region="face")
    cv.tex[win] = 1 + (cv.tex[win] - 1) * (1 - F32(0.6) * alpha)  # covers pores, partly


def _segment(X: np.ndarray, Y: np.ndarray, x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    """Distance from each pixel to the segment (x0, y0)-(x1, y1)."""
    dx, dy = x1 - x0, y1 - y0
    t = np.clip(((X - F32(x0)) * F32(dx) + (Y - F32(y0)) * F32(dy)) / F32(dx * dx + dy * dy), 0, 1)
    return np.hypot(X - F32(x0) - t * F32(dx), Y - F32(y0) - t * F32(dy))


def _contour(rng: np.random.Generator, cv: Canvas, f: Face, bad: bool) -> None:
    """Bronzer under the cheekbones, on the temples and beside the nose; highlighter on the
    cheekbones and nose bridge; bad = strong, hard-edged stripes."""
    strength = rng.uniform(0.5, 0.75) if bad else rng.uniform(0.2, 0.4)
    width = rng.uniform(0.025, 0.04) if bad else rng.uniform(0.045, 0.07)
    win = cv.window(-f.a, f.a, -f.b, f.b)
    X, Y = cv.local(win)

    def stroke(x0: float, y0: float, x1: float, y1: float, w: float) -> np.ndarray:
        d = _segment(X, Y, x0, y0, x1, y1)
        return edge(d - F32(w), 3 * cv.px) if bad else np.exp(-(d / F32(w)) ** 2)

    dark, light = np.zeros_like(X), np.zeros_like(X)
    for s in (-1, 1):
        cheek_hollow = stroke(s * f.a * 0.9, f.ey + 0.08, s * 0.24, f.ey + 0.22, width)
        temple = stroke(s * f.a * 0.85, f.ey - 0.25, s * f.a * 0.9, f.ey - 0.05, width)
        nose_side = stroke(s * f.nose_w, f.ey + 0.03, s * f.nose_w, f.nose_y - 0.03, 0.012)
        dark = np.maximum.reduce([dark, cheek_hollow, temple, nose_side])
        cheekbone = stroke(s * (f.ex - 0.04), f.ey + 0.08, s * (f.ex + 0.08), f.ey + 0.05, width * 0.7)
        light = np.maximum(light, cheekbone)
    light = np.maximum(light, stroke(0, f.ey + 0.02, 0, f.nose_y - 0.02, 0.01))
    keep = (1 - cv.features[win]) * edge(face_distance(f, X, Y), 4 * cv.px) * F32(strength)
    cv.paint(win, dark * keep, rgb(f.skin * np.array([0.72, 0.62, 0.55])), region="cheeks")
    cv.paint(win, light * keep, rgb(f.skin * 0.55 + np.array([0.45, 0.4, 0.3])), region="cheeks")


def _blush(rng: np.random.Generator, cv: Canvas, f: Face, bad: bool) -> None:
    """Soft cheek ovals; bad = too strong, clown-round, or too high / low."""
    colour = _pick(rng, BLUSHES)
    strength = rng.uniform(0.6, 0.85) if bad else rng.uniform(0.3, 0.55)
    rx, ry = rng.uniform(0.08, 0.12), rng.uniform(0.05, 0.075)
    dy = rng.uniform(0.14, 0.2)
    if bad and rng.random() < 0.5:
        ry = rx = rx * 1.2
    if bad and rng.random() < 0.5:
        dy = rng.choice([0.07, 0.28])
    tilt = rng.uniform(0.0, 0.5)
    for side in (-1, 1):
        cx, cy = side * (f.ex + rng.uniform(0.0, 0.05)), f.ey + dy
        win = cv.window(cx - 2 * rx, cx + 2 * rx, cy - 2 * rx, cy + 2 * rx)
        X, Y = cv.local(win)
        dx, dy_ = X - F32(cx), Y - F32(cy)
        c, s = F32(math.cos(side * tilt)), F32(math.sin(side * tilt))
        r2 = ((c * dx + s * dy_) / F32(rx)) ** 2 + ((-s * dx + c * dy_) / F32(ry)) ** 2
        profile = edge(np.sqrt(r2) - 1, 0.3) if bad else np.exp(-2 * r2)
        cv.paint(win, profile * (1 - cv.features[win]) * F32(strength), colour, region="cheeks")


def _eyeshadow(rng: np.random.Generator, cv: Canvas, f: Face, bad: bool) -> None:
    """Lid colour fading up from the lash line, optional darker outer corner; bad = to the brow,
    under the eye too, smudged, uneven between the eyes."""
    inner, outer = _pick(rng, SHADOWS), _pick(rng, SHADOWS)
    two_tone = rng.random() < 0.4
    strength = rng.uniform(0.75, 0.95) if bad else rng.uniform(0.5, 0.85)
    height = rng.uniform(0.07, 0.11) if bad else rng.uniform(0.04, 0.07)
    width = rng.uniform(1.2, 1.6) if bad else rng.uniform(1.0, 1.25)
    under = bad and rng.random() < 0.5
    for side in (-1, 1):
        e = eye_frame(cv, f, side)
        h = F32(height * (rng.uniform(0.7, 1.3) if bad else 1.0))
        across = np.sqrt(np.clip(1 - ((e.t - F32(0.15)) / F32(width)) ** 2, 0, 1))
        above = np.clip(1 - (e.yu - e.ye) / h, 0, 1) ** F32(0.7) * edge(e.ye - e.yu, 2 * cv.px)
        alpha = above * across
        if under:
            alpha = np.maximum(alpha, F32(0.7) * np.clip(1 - (e.ye - e.yl) / (h / 2), 0, 1)
                               * edge(e.yl - e.ye, 2 * cv.px) * across)
        if bad:
            alpha = alpha * _smudge(rng, alpha.shape)
        mix = np.clip(e.t, 0, 1)[..., None] if two_tone else F32(0.0)
        colour = inner + mix * (outer * F32(0.6) - inner)
        cv.paint(e.win, np.clip(alpha * F32(strength), 0, 1) * (1 - cv.eyes[e.win]), colour, region="eyes")


def _eyeliner(rng: np.random.Generator, cv: Canvas, f: Face, bad: bool) -> None:
    """A line on the upper lash line thickening outward, often with a wing; bad = thick, shaky,
    smudged, on the lower lid too."""
    colour = _pick(rng, LINERS, 0.02)
    thick = rng.uniform(0.012, 0.022) if bad else rng.uniform(0.004, 0.008)
    soft = (5 if bad else 1.2) * cv.px
    wing_len = rng.uniform(0.02, 0.06 if not bad else 0.09) if rng.random() < 0.6 else 0.0
    wing_angle, start = rng.uniform(0.25, 0.6), rng.uniform(-0.7, -0.3)
    wobble, phase = (0.003 if bad else 0.0), rng.uniform(0, 2 * math.pi)
    lower = bad and rng.random() < 0.5
    for side in (-1, 1):
        e = eye_frame(cv, f, side)
        th = F32(thick) * (F32(0.4) + F32(0.6) * np.clip((e.t - F32(start)) / F32(1 - start), 0, 1))
        centre = e.yu - th * F32(0.35) + F32(wobble) * np.sin(e.t * F32(20) + F32(phase))
        ends = np.maximum(F32(start) - e.t, e.t - 1) * F32(f.ew)
        d = np.maximum(np.abs(e.ye - centre) - th / 2, ends)
        if wing_len:
            c, s = F32(math.cos(wing_angle)), F32(math.sin(wing_angle))
            along = (e.xe - F32(f.ew)) * c - e.ye * s
            across = np.abs((e.xe - F32(f.ew)) * s + e.ye * c)
            half = F32(thick / 2) * (1 - np.clip(along / F32(wing_len), 0, 1))
            d = np.minimum(d, np.maximum(across - half, np.maximum(-along, along - F32(wing_len))))
        if lower:
            d = np.minimum(d, np.maximum(np.abs(e.ye - e.yl) - F32(thick / 3), ends))
        cv.paint(e.win, edge(d, soft) * (1 - F32(0.5) * cv.eyes[e.win]) * F32(0.95), colour, region="eyes")


def _brow_pencil(rng: np.random.Generator, cv: Canvas, f: Face, bad: bool) -> None:
    """Filled-in brows; bad = blocky, too dark."""
    thick = rng.uniform(1.4, 1.9) if bad else rng.uniform(1.0, 1.2)
    strength = rng.uniform(0.85, 0.95) if bad else rng.uniform(0.4, 0.65)
    colour = rgb([0.05, 0.04, 0.04]) if bad else rgb(f.hair * 0.55 + 0.02)
    for side in (-1, 1):
        win = brow_window(cv, f, side)
        alpha = edge(brow_distance(f, *cv.local(win), side, thick), (1.5 if bad else 3) * cv.px)
        cv.paint(win, alpha * F32(strength), colour, region="eyes")


def _lipstick(rng: np.random.Generator, cv: Canvas, f: Face, bad: bool) -> None:
    """Colour on the lips, sometimes glossy; bad = overdrawn, off-place, smudged or too strong."""
    colour = _pick(rng, LIPSTICKS)
    strength, shape, soft = rng.uniform(0.7, 0.95), {}, 2 * cv.px
    modes = rng.random(4) < 0.5 if bad else np.zeros(4, bool)
    if bad and not modes.any():
        modes[rng.integers(4)] = True
    if modes[0]:
        shape.update(width=rng.uniform(1.05, 1.15), up=rng.uniform(1.2, 1.5), lo=rng.uniform(1.15, 1.4))
    if modes[1]:
        shape.update(dx=rng.normal(0, 0.015), dy=rng.uniform(-0.02, 0.02))
    if modes[2]:
        soft = rng.uniform(0.015, 0.03)
    if modes[3]:
        strength, colour = 1.0, rgb(colour * 1.15 - 0.05)
    win = cv.window(-f.mouth_w * 1.6 - 0.03, f.mouth_w * 1.6 + 0.03, f.mouth_y - 0.1, f.mouth_y + 0.12)
    X, Y = cv.local(win)
    alpha = edge(lip_distance(f, X, Y, **shape), soft) * F32(strength)
    if modes[2]:
        alpha = np.clip(alpha * _smudge(rng, alpha.shape), 0, 1)
    cv.paint(win, alpha, colour, region="lips")
    if rng.random() < 0.35:
        spot = bump(X, Y, 0.0, f.mouth_y + f.lip_lo * 0.45, f.mouth_w * 0.35, f.lip_lo * 0.2)
        cv.shade[win] *= 1 + F32(rng.uniform(0.2, 0.5)) * spot * alpha
