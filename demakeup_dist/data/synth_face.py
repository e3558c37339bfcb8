"""Procedural face painter for the synthetic de-makeup dataset (numpy + Pillow only).

Everything is painted at high resolution (HR, 4x the dataset size) as float32 RGB in [0, 1]
on a face-local frame (X right, Y down, origin at the face centre, face half-height ~0.7),
so that one face can be finished twice: bare (the de-makeup target) and made-up (the input,
and at HR the super-resolution target). Layers of a `Canvas`, all float32:

- ``albedo`` (H, W, 3): surface colour before lighting; features and makeup are painted here.
- ``shade`` (H, W): lighting (face ellipsoid, nose, eye sockets, lips, lip gloss).
- ``tex`` (H, W): multiplicative skin micro-texture (pores, blotches, freckles); 1 off skin.
- ``skin`` / ``features`` / ``eyes`` (H, W): masks that keep later layers in place.

Final HR image = albedo * shade * tex, with the hair fringe over it, plus sensor grain.
Small features are painted inside windows (slices of the frame) so cost stays ~ image area.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from PIL import Image

F32 = np.float32
Window = tuple[slice, slice]

SKIN_TONES = np.array([[0.97, 0.84, 0.74], [0.93, 0.74, 0.61], [0.84, 0.62, 0.47],
                       [0.70, 0.49, 0.35], [0.52, 0.35, 0.24], [0.36, 0.24, 0.17]], F32)
HAIR_COLOURS = np.array([[0.05, 0.04, 0.04], [0.14, 0.09, 0.06], [0.30, 0.19, 0.11],
                         [0.45, 0.20, 0.10], [0.70, 0.55, 0.33], [0.55, 0.55, 0.55]], F32)
HAIR_WEIGHTS = np.array([0.35, 0.25, 0.15, 0.08, 0.12, 0.05])
IRIS_COLOURS = np.array([[0.25, 0.14, 0.07], [0.12, 0.07, 0.04], [0.40, 0.30, 0.15],
                         [0.25, 0.40, 0.55], [0.30, 0.45, 0.30], [0.45, 0.48, 0.50]], F32)


def rgb(values: npt.ArrayLike) -> np.ndarray:
    """A float32 colour (or colour array): keeps every later product in float32 (NEP 50)."""
    return np.clip(np.asarray(values, dtype=F32), 0.0, 1.0)


def edge(d: np.ndarray, width: float) -> np.ndarray:
    """Soft inside-mask in [0, 1] from a signed distance `d` (< 0 inside), ramp `width` wide."""
    return np.clip(F32(0.5) - d / F32(width), 0.0, 1.0)


def ellipse(X: np.ndarray, Y: np.ndarray, cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
    """Approximate signed distance to an axis-aligned ellipse (exact on the axes of a circle)."""
    return (np.sqrt(((X - F32(cx)) / F32(rx)) ** 2 + ((Y - F32(cy)) / F32(ry)) ** 2) - 1) * F32(min(rx, ry))


def bump(X: np.ndarray, Y: np.ndarray, cx: float, cy: float, sx: float, sy: float) -> np.ndarray:
    """Gaussian blob in (0, 1] centred on (cx, cy) with widths (sx, sy)."""
    return np.exp(-(((X - F32(cx)) / F32(sx)) ** 2 + ((Y - F32(cy)) / F32(sy)) ** 2))


def noise_field(rng: np.random.Generator, cells: int, shape: tuple[int, int]) -> np.ndarray:
    """Smooth random field (about unit std) with `cells` features across, bicubic-resized to `shape`."""
    small = rng.standard_normal((cells, cells), dtype=F32)
    return np.asarray(Image.fromarray(small, "F").resize(shape[::-1], Image.BICUBIC))


@dataclass(frozen=True)
class Face:
    """One face's pose, geometry (face-local units) and colours; drawn by `sample_face`."""

    pose: tuple[float, float, float, float]  # centre x, centre y (image units [-1, 1]), scale, angle
    a: float  # face half-width
    b: float  # face half-height
    jaw: float  # how much the face narrows toward the chin
    skin: np.ndarray
    hair: np.ndarray
    iris: np.ndarray
    lip: np.ndarray
    ex: float  # eye centre |x|
    ey: float  # eye centre y
    ew: float  # eye half-width
    eh_up: float
    eh_lo: float
    eye_tilt: float
    gaze: tuple[float, float]
    brow_y: float
    brow_thick: float
    brow_arch: float
    brow_inner: float
    brow_outer: float
    nose_y: float
    nose_w: float
    mouth_y: float
    mouth_w: float
    lip_up: float
    lip_lo: float
    bow: float
    smile: float
    light: np.ndarray  # unit vector toward the light (x, y, z), z toward the camera
    ambient: float
    hair_w: float  # hair silhouette half-width beyond the face
    hair_top: float
    hair_len: float | None  # lowest y of long hair, None for short hair
    hairline: float
    hair_slope: float
    temple: float


def sample_face(rng: np.random.Generator) -> Face:
    """Draw a random face (skin tone, proportions, lighting, hair style)."""
    u = rng.uniform
    tone = u(0, len(SKIN_TONES) - 1)
    lo = int(tone)
    skin = SKIN_TONES[lo] + (tone - lo) * (SKIN_TONES[min(lo + 1, len(SKIN_TONES) - 1)] - SKIN_TONES[lo])
    skin = rgb(skin * (1 + rng.normal(0, 0.03, 3)))
    hair = rgb(HAIR_COLOURS[rng.choice(len(HAIR_COLOURS), p=HAIR_WEIGHTS)] * u(0.8, 1.2))
    light = np.array([rng.normal(0, 0.5), u(-0.6, 0.0), 1.0])
    a, b, ey = u(0.46, 0.54), u(0.64, 0.72), u(-0.09, -0.03)
    ew, nose_y = u(0.095, 0.115), ey + u(0.20, 0.25)
    long_hair = rng.random() < 0.5
    return Face(
        pose=(rng.normal(0, 0.03), u(0.0, 0.1), u(0.95, 1.12), rng.normal(0, 0.07)),
        a=a, b=b, jaw=u(0.15, 0.35), skin=skin, hair=hair,
        iris=rgb(IRIS_COLOURS[rng.integers(len(IRIS_COLOURS))] * u(0.8, 1.2)),
        lip=rgb(skin * np.array([0.92, 0.66, 0.66]) * u(0.8, 0.95)),
        ex=u(0.19, 0.23), ey=ey, ew=ew, eh_up=u(0.034, 0.046), eh_lo=u(0.02, 0.028),
        eye_tilt=u(-0.05, 0.15), gaze=(rng.normal(0, 0.5), rng.normal(0, 0.5)),
        brow_y=ey - u(0.10, 0.13), brow_thick=u(0.026, 0.042), brow_arch=u(0.01, 0.03),
        brow_inner=u(0.04, 0.07), brow_outer=u(0.0, 0.04),
        nose_y=nose_y, nose_w=u(0.045, 0.065),
        mouth_y=nose_y + u(0.10, 0.13), mouth_w=u(0.12, 0.16), lip_up=u(0.026, 0.04),
        lip_lo=u(0.035, 0.055), bow=u(0.2, 0.5), smile=u(-0.01, 0.025),
        light=(light / np.linalg.norm(light)).astype(F32), ambient=u(0.35, 0.55),
        hair_w=u(0.04, 0.14), hair_top=u(0.04, 0.14),
        hair_len=b + u(0.1, 0.6) if long_hair else None,
        hairline=-b * u(0.45, 0.62), hair_slope=rng.normal(0, 0.12), temple=u(0.05, 0.2),
    )


def face_box(face: Face, side: int) -> tuple[float, float, float, float]:
    """Where `face` lies in a `side` x `side` render: the bounding box (x0, y0, x1, y1) in pixels of
    its outline (cheek to cheek, forehead to chin, hair excluded), rotation included."""
    cx, cy, scale, angle = face.pose
    cos, sin = math.cos(angle), math.sin(angle)
    xs, ys = np.array([-face.a, face.a, -face.a, face.a]), np.array([-face.b, -face.b, face.b, face.b])
    u = (cx + scale * (cos * xs - sin * ys) + 1) * side / 2
    v = (cy + scale * (sin * xs + cos * ys) + 1) * side / 2
    return float(u.min()), float(v.min()), float(u.max()), float(v.max())


class Canvas:
    """The float32 HR layers of one render (see the module docstring) on an `hr` x `hr` frame."""

    def __init__(self, hr: int, face: Face) -> None:
        self.hr = hr
        cx, cy, self.scale, angle = face.pose
        self.cos, self.sin = math.cos(angle), math.sin(angle)
        self.cx, self.cy = cx, cy
        c = (np.arange(hr, dtype=F32) + F32(0.5)) * F32(2.0 / hr) - F32(1.0)
        du, dv = c[None, :] - F32(cx), c[:, None] - F32(cy)
        inv = F32(1.0 / self.scale)
        self.X = (F32(self.cos) * du + F32(self.sin) * dv) * inv
        self.Y = (F32(-self.sin) * du + F32(self.cos) * dv) * inv
        self.px = 2.0 / hr / self.scale  # one HR pixel in face-local units
        self.albedo = np.zeros((hr, hr, 3), F32)
        self.shade = np.ones((hr, hr), F32)
        self.tex = np.ones((hr, hr), F32)
        self.skin = np.zeros((hr, hr), F32)
        self.features = np.zeros((hr, hr), F32)
        self.eyes = np.zeros((hr, hr), F32)
        self.fringe: tuple[Window, np.ndarray, np.ndarray] | None = None
        # region name -> (H, W) strongest alpha any product painted there; the makeup painters fill it
        # (`paint(..., region=...)`), so the test report can say where each network removed the makeup.
        self.painted: dict[str, np.ndarray] = {}

    def window(self, x0: float, x1: float, y0: float, y1: float) -> Window:
        """Pixel slices covering the face-local box [x0, x1] x [y0, y1] (possibly empty)."""
        xs, ys = np.array([x0, x1, x0, x1]), np.array([y0, y0, y1, y1])
        u = self.cx + self.scale * (self.cos * xs - self.sin * ys)
        v = self.cy + self.scale * (self.sin * xs + self.cos * ys)
        cols, rows = (u + 1) * self.hr / 2, (v + 1) * self.hr / 2

        def span(px: np.ndarray) -> slice:  # 2 px margin for the soft edges
            return slice(max(0, int(px.min()) - 2), min(self.hr, int(math.ceil(px.max())) + 2))

        return span(rows), span(cols)

    def local(self, win: Window) -> tuple[np.ndarray, np.ndarray]:
        """Face-local X, Y coordinates of the pixels of `win`."""
        return self.X[win], self.Y[win]

    def paint(self, win: Window, alpha: np.ndarray, colour: np.ndarray, *, skin: float | None = None,
              feature: bool = False, region: str | None = None) -> None:
        """Composite `colour` ((3,) or (h, w, 3)) over the albedo with `alpha` (h, w); update masks.
        `region`: the makeup region this paint belongs to, recorded in `painted`."""
        self.albedo[win] += alpha[..., None] * (colour - self.albedo[win])
        if region is not None:
            where = self.painted.setdefault(region, np.zeros((self.hr, self.hr), F32))
            np.maximum(where[win], alpha, out=where[win])
        if skin is not None:
            self.skin[win] += alpha * (F32(skin) - self.skin[win])
        if feature:
            np.maximum(self.features[win], alpha, out=self.features[win])

    def relight(self, win: Window, alpha: np.ndarray, shade: np.ndarray | float) -> None:
        """Replace the lighting inside `win` by `shade` where `alpha` says so."""
        self.shade[win] += alpha * (shade - self.shade[win])

    def finish(self, grain: np.ndarray) -> np.ndarray:
        """The final HR image (H, W, 3) float32 in [0, 1]: lit albedo, fringe on top, plus `grain`."""
        img = self.albedo * (self.shade * self.tex)[..., None]
        if self.fringe is not None:
            win, alpha, colour = self.fringe
            img[win] += alpha[..., None] * (colour - img[win])
        img += grain[..., None]
        return np.clip(img, 0.0, 1.0, out=img)


def face_distance(f: Face, X: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """Approximate signed distance to the face outline (egg shape narrowing to the jaw)."""
    aw = f.a * (1 - f.jaw * np.clip(Y / f.b, 0, 1) ** 2)
    return (np.sqrt((X / aw) ** 2 + (Y / f.b) ** 2) - 1) * F32(f.a * 0.9)


@dataclass(frozen=True)
class EyeFrame:
    """Pixels around one eye in eye coordinates: `xe` outward from the nose, `ye` down, lids."""

    win: Window
    xe: np.ndarray
    ye: np.ndarray
    t: np.ndarray  # xe / eye half-width
    yu: np.ndarray  # upper lid y at this t (<= 0)
    yl: np.ndarray  # lower lid y at this t (>= 0)

    def inside(self) -> np.ndarray:
        """Signed distance to the eye opening (almond shape)."""
        return np.maximum(self.yu - self.ye, self.ye - self.yl) + np.maximum(np.abs(self.t) - 1, 0) * 0.1


def eye_frame(cv: Canvas, f: Face, side: int) -> EyeFrame:
    """The `EyeFrame` of the left (side=-1) or right (side=+1) eye."""
    x = side * f.ex
    win = cv.window(x - 2 * f.ew, x + 2 * f.ew, f.ey - 0.17, f.ey + 0.1)
    X, Y = cv.local(win)
    xe = (X - F32(x)) * F32(side)
    ye = Y - F32(f.ey) + F32(f.eye_tilt) * xe
    t = xe / F32(f.ew)
    base = np.clip(1 - t * t, 0, 1)
    return EyeFrame(win, xe, ye, t, -F32(f.eh_up) * base ** 0.8, F32(f.eh_lo) * base ** 0.9)


def lip_distance(f: Face, X: np.ndarray, Y: np.ndarray, *, dx: float = 0.0, dy: float = 0.0,
                 width: float = 1.0, up: float = 1.0, lo: float = 1.0) -> np.ndarray:
    """Signed distance to the lips (cupid's bow on top), optionally moved / scaled (overdrawn lipstick)."""
    mw = f.mouth_w * width
    t = (X - F32(dx)) / F32(mw)
    base = np.clip(1 - t * t, 0, 1)
    ym = F32(f.mouth_y + dy) - F32(f.smile) * t * t
    yu = ym - F32(f.lip_up * up) * base ** 0.6 * (1 - F32(f.bow) * np.exp(-(t / F32(0.2)) ** 2))
    yl = ym + F32(f.lip_lo * lo) * base ** 0.7
    return np.maximum(yu - Y, Y - yl) + np.maximum(np.abs(t) - 1, 0) * F32(mw)


def brow_distance(f: Face, X: np.ndarray, Y: np.ndarray, side: int, thick: float = 1.0) -> np.ndarray:
    """Signed distance to one eyebrow: an arched band thinning toward the temple."""
    x0, x1 = f.brow_inner, f.ex + f.ew + f.brow_outer
    t = (X * F32(side) - F32(x0)) / F32(x1 - x0)
    tc = np.clip(t, 0, 1)
    yb = F32(f.brow_y) - F32(f.brow_arch) * np.sin(F32(math.pi) * tc ** 0.8)
    half = F32(f.brow_thick * thick / 2) * (1 - F32(0.55) * tc)
    ends = np.maximum(-t, t - 1) * F32(x1 - x0)
    return np.maximum(np.abs(Y - yb) - half, ends)


def brow_window(cv: Canvas, f: Face, side: int) -> Window:
    """Pixels around one eyebrow (room for a thick pencilled brow)."""
    x0, x1 = side * (f.brow_inner - 0.03), side * (f.ex + f.ew + f.brow_outer + 0.03)
    return cv.window(min(x0, x1), max(x0, x1), f.brow_y - f.brow_arch - 0.06, f.brow_y + 0.05)


def paint_face(rng: np.random.Generator, cv: Canvas, f: Face) -> None:
    """Paint the bare face (no makeup) with background, hair, neck and clothes onto `cv`."""
    fine = rng.standard_normal((cv.hr, cv.hr), dtype=F32)
    fine = _smooth(_smooth(fine, 0), 1) * F32(1 / 0.375)  # unit std pore-scale noise (~2 HR px)
    strands = _strands(rng)
    _background(rng, cv)
    _hair_back(cv, f, strands)
    _body(rng, cv, f)
    _face_skin(cv, f)
    for side in (-1, 1):
        _eye(cv, f, side)
        win = brow_window(cv, f, side)
        X, Y = cv.local(win)
        hairs = np.sin((X * F32(side) * F32(0.9) - Y * F32(0.45)) * F32(2 * math.pi / 0.006) + 3 * fine[win])
        alpha = edge(brow_distance(f, X, Y, side), 2 * cv.px) * (F32(0.75) + F32(0.2) * hairs)
        cv.paint(win, alpha, f.hair * F32(0.7), feature=True)
    _nose(cv, f)
    _mouth(cv, f, fine)
    _skin_texture(rng, cv, f, fine)
    cv.fringe = _fringe(cv, f, strands)


def _smooth(a: np.ndarray, axis: int) -> np.ndarray:
    """[1, 2, 1] / 4 blur along `axis` (edges replicated)."""
    p = np.pad(a, [(1, 1) if i == axis else (0, 0) for i in range(a.ndim)], mode="edge")
    lo, mid, hi = (p[(slice(None),) * axis + (slice(k, k + a.shape[axis]),)] for k in range(3))
    return (lo + 2 * mid + hi) * F32(0.25)


def _strands(rng: np.random.Generator) -> np.ndarray:
    """1-D hair strand brightness profile in [-1, 1] (one value per strand around the crown)."""
    s = rng.standard_normal(1024).astype(F32)
    return np.tanh(s + 0.5 * np.roll(s, 1))


def _hair_rgb(cv: Canvas, f: Face, win: Window, strands: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Hair colour over `win` (strands radiating from the crown, a soft sheen band) and the
    strand profile in [-1, 1] there (for wispy edges)."""
    X, Y = cv.local(win)
    dx, dy = X - F32(f.hair_slope), Y + F32(f.b + 0.05)
    rad = np.hypot(dx, dy)
    pos = np.arctan2(dx, -dy) * F32(len(strands) / (2 * math.pi))
    lo = np.floor(pos)
    k = lo.astype(np.int64) % len(strands)
    s = strands[k] + (pos - lo) * (strands[(k + 1) % len(strands)] - strands[k])
    sheen = np.exp(-((rad - F32(0.35)) / F32(0.08)) ** 2) * F32(0.3)
    colour = f.hair * (F32(0.75) + F32(0.3) * s)[..., None] + (F32(0.5) * sheen * (1 - F32(0.3) * s))[..., None]
    return colour, s


def _hair_distance(f: Face, X: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """Signed distance to the hair silhouette behind the head (plus a long fall if any)."""
    rx, ry, top = f.a + f.hair_w, f.b * 0.92 + f.hair_top, -0.12
    d = ellipse(X, Y, 0.0, top, rx, ry)
    if f.hair_len is not None:
        fall = np.maximum(np.maximum(np.abs(X) - F32(rx), Y - F32(f.hair_len)), F32(top) - Y)
        d = np.minimum(d, fall)
    return d


def _background(rng: np.random.Generator, cv: Canvas) -> None:
    grey = rng.uniform(0.2, 0.8)
    c0, c1 = rgb(grey + rng.uniform(0.4, 0.8) * (rng.uniform(0.1, 0.9, (2, 3)) - grey))
    th = rng.uniform(0, 2 * math.pi)
    c = (np.arange(cv.hr, dtype=F32) + F32(0.5)) / F32(cv.hr) - F32(0.5)
    g = np.clip(F32(0.5) + c[None, :] * F32(math.cos(th)) + c[:, None] * F32(math.sin(th)), 0, 1)
    blotch = np.stack([noise_field(rng, 4, (cv.hr, cv.hr)) for _ in range(3)], axis=-1)
    cv.albedo[:] = c0 + g[..., None] * (c1 - c0) + blotch * F32(0.06)


def _hair_back(cv: Canvas, f: Face, strands: np.ndarray) -> None:
    rx = f.a + f.hair_w
    bottom = f.hair_len if f.hair_len is not None else f.b
    win = cv.window(-rx - 0.05, rx + 0.05, -f.b - f.hair_top - 0.2, bottom + 0.05)
    colour, s = _hair_rgb(cv, f, win, strands)
    alpha = edge(_hair_distance(f, *cv.local(win)) + F32(0.006) * s, 3 * cv.px)
    cv.paint(win, alpha, colour, skin=0.0)


def _body(rng: np.random.Generator, cv: Canvas, f: Face) -> None:
    """Neck (skin, shadowed under the jaw) and shoulders in a random clothing colour."""
    win = cv.window(-2.5, 2.5, 0.0, 3.0)
    X, Y = cv.local(win)
    nw = f.a * rng.uniform(0.5, 0.6)
    neck = edge(np.maximum(np.abs(X) - F32(nw), -Y), 2 * cv.px)
    cv.paint(win, neck, f.skin, skin=1.0)
    under_jaw = F32(0.6) + F32(0.25) * np.clip((Y - F32(f.b)) / F32(0.5), 0, 1)
    cv.relight(win, neck, under_jaw * (1 - F32(0.3) * (X / F32(nw)) ** 4))
    top = f.b + rng.uniform(0.08, 0.2)
    neckline = ellipse(X, Y, 0.0, top, nw * 1.3, rng.uniform(0.1, 0.35))
    cloth = edge(np.maximum(ellipse(X, Y, 0.0, top + 0.5, f.a * 2.4, 0.5), -neckline), 2 * cv.px)
    cv.paint(win, cloth, rgb(rng.uniform(0.05, 0.9, 3)), skin=0.0)
    cv.relight(win, cloth, F32(0.95) - F32(0.2) * np.abs(X) / F32(f.a * 2.4))


def _face_skin(cv: Canvas, f: Face) -> None:
    """Face and ears in skin colour, lit as a slightly flattened ellipsoid; natural cheek redness."""
    for side in (-1, 1):
        x = side * f.a * (1 - f.jaw * max(f.ey / f.b, 0) ** 2)
        win = cv.window(x - 0.07, x + 0.07, f.ey - 0.08, f.ey + 0.2)
        X, Y = cv.local(win)
        ear = edge(ellipse(X, Y, x, f.ey + 0.05, 0.05, 0.11), 2 * cv.px)
        cv.paint(win, ear, f.skin * F32(0.95), skin=1.0)
        cv.relight(win, ear, F32(0.75))
    win = cv.window(-f.a - 0.02, f.a + 0.02, -f.b - 0.02, f.b + 0.02)
    X, Y = cv.local(win)
    alpha = edge(face_distance(f, X, Y), 2 * cv.px)
    aw = F32(f.a) * (1 - F32(f.jaw) * np.clip(Y / F32(f.b), 0, 1) ** 2)
    nx, ny = X / aw, Y / F32(f.b)
    nz = np.sqrt(np.clip(1 - nx * nx - ny * ny, 0, 1))
    lam = np.clip((F32(0.8) * (nx * f.light[0] + ny * f.light[1]) + nz * f.light[2]) / F32(1.1), 0, 1)
    cheeks = bump(X, Y, -f.ex - 0.02, f.ey + 0.17, 0.1, 0.07) + bump(X, Y, f.ex + 0.02, f.ey + 0.17, 0.1, 0.07)
    colour = f.skin * (1 - cheeks[..., None] * rgb([0.0, 0.07, 0.05]))
    cv.paint(win, alpha, colour, skin=1.0)
    cv.relight(win, alpha, F32(f.ambient) + F32(1 - f.ambient) * lam)


def _eye(cv: Canvas, f: Face, side: int) -> None:
    """Sclera, iris (radial streaks, limbal ring), pupil, catch-light, lash line, crease and socket."""
    e = eye_frame(cv, f, side)
    eye = edge(e.inside(), 1.5 * cv.px)
    corners = 1 - F32(0.3) * np.minimum(e.t * e.t, 1)  # the eyeball turns away from the light
    cv.paint(e.win, eye, rgb([0.92, 0.89, 0.86]) * corners[..., None], skin=0.0)
    np.maximum(cv.eyes[e.win], eye, out=cv.eyes[e.win])
    np.maximum(cv.features[e.win], eye, out=cv.features[e.win])
    ri = F32(f.eh_up * 1.25)
    ix, iy = e.xe - F32(side * f.gaze[0] * f.ew * 0.3), e.ye - F32(f.gaze[1] * f.eh_up * 0.2)
    ir = np.hypot(ix, iy) / ri
    ang = np.arctan2(iy, ix)
    streaks = F32(0.8) + F32(0.2) * np.minimum(ir, 1) * (np.sin(ang * F32(23)) + np.sin(ang * F32(37) + F32(1)))
    ring = 1 - F32(0.55) * np.clip((ir - F32(0.8)) / F32(0.2), 0, 1)
    cv.paint(e.win, edge((ir - 1) * ri, 1.5 * cv.px) * eye, f.iris * (streaks * ring)[..., None])
    cv.paint(e.win, edge((ir - F32(0.42)) * ri, cv.px) * eye, rgb([0.03, 0.03, 0.03]))
    glint = np.hypot(ix + ri * F32(0.35 * f.light[0] * 2), iy + ri * F32(0.35)) - ri * F32(0.18)
    cv.paint(e.win, edge(glint, cv.px) * eye * F32(0.85), rgb([1.0, 1.0, 1.0]))
    lid_shadow = np.exp(-np.clip(e.ye - e.yu, 0, None) / F32(0.25 * f.eh_up))
    cv.shade[e.win] *= 1 - F32(0.35) * lid_shadow * eye
    lash = F32(0.005)
    within = edge(np.abs(e.t - F32(0.03)) - F32(1.05), 0.05)
    cv.paint(e.win, edge(np.abs(e.ye - e.yu + lash * F32(0.3)) - lash / 2, cv.px) * within * F32(0.9),
             rgb([0.04, 0.03, 0.03]), feature=True)
    cv.paint(e.win, edge(np.abs(e.ye - e.yl) - lash / 4, cv.px) * within * F32(0.35), rgb([0.1, 0.07, 0.06]))
    crease = np.exp(-((e.ye - e.yu * F32(1.1) + F32(0.022)) / F32(0.008)) ** 2) * edge(np.abs(e.t) - 1.1, 0.2)
    socket = bump(e.xe, e.ye, 0.0, -0.03, f.ew * 1.5, 0.07)
    cv.shade[e.win] *= (1 - F32(0.2) * crease) * (1 - F32(0.12) * socket)


def _nose(cv: Canvas, f: Face) -> None:
    """Nose by shading only (bridge highlight, side shadows, tip, wings) plus dark nostrils."""
    nw, ny = f.nose_w, f.nose_y
    win = cv.window(-0.15, 0.15, f.ey, ny + 0.09)
    X, Y = cv.local(win)
    along = np.clip((Y - F32(f.ey + 0.03)) / F32(0.05), 0, 1) * np.clip((F32(ny + 0.03) - Y) / F32(0.03), 0, 1)
    delta = F32(0.1) * np.exp(-(X / F32(0.022)) ** 2) * along
    for s in (-1, 1):
        amount = 0.08 + 0.15 * max(0.0, -s * float(f.light[0]))
        delta -= F32(amount) * np.exp(-((X - F32(s * nw * 0.75)) / F32(0.02)) ** 2) * along
        wing = np.hypot((X - F32(s * nw)) / F32(0.03), (Y - F32(ny + 0.01)) / F32(0.026))
        delta -= F32(0.18) * np.exp(-((wing - 1) / F32(0.25)) ** 2)
    delta += F32(0.06) * bump(X, Y, 0.0, ny, nw * 0.6, 0.035) - F32(0.15) * bump(X, Y, 0.0, ny + 0.05, nw, 0.015)
    cv.shade[win] *= 1 + delta
    for s in (-1, 1):
        hole = edge(ellipse(X, Y, s * nw * 0.5, ny + 0.03, 0.02, 0.01), 2 * cv.px)
        cv.paint(win, hole * F32(0.8), f.skin * F32(0.3), feature=True)


def _mouth(cv: Canvas, f: Face, fine: np.ndarray) -> None:
    """Natural lips with fine vertical lines, the dark mouth line, lower-lip highlight, chin shadow."""
    win = cv.window(-f.mouth_w * 1.6, f.mouth_w * 1.6, f.mouth_y - 0.08, f.mouth_y + 0.12)
    X, Y = cv.local(win)
    lines = 1 + F32(0.08) * np.sin(X * F32(2 * math.pi / 0.007) + 2 * fine[win])
    cv.paint(win, edge(lip_distance(f, X, Y), 2.5 * cv.px), f.lip * lines[..., None], feature=True)
    t = X / F32(f.mouth_w)
    ym = F32(f.mouth_y) - F32(f.smile) * t * t
    seam = np.exp(-((Y - ym) / F32(0.0035)) ** 2) * edge(np.abs(t) - F32(1.02), 0.05) * F32(0.7)
    cv.paint(win, seam, f.lip * F32(0.35), feature=True)
    highlight = bump(X, Y, 0.0, f.mouth_y + f.lip_lo * 0.5, f.mouth_w * 0.5, f.lip_lo * 0.3)
    shadow = bump(X, Y, 0.0, f.mouth_y + f.lip_lo + 0.02, f.mouth_w * 0.5, 0.012)
    cv.shade[win] *= (1 + F32(0.12) * highlight) * (1 - F32(0.12) * shadow)


def _skin_texture(rng: np.random.Generator, cv: Canvas, f: Face, fine: np.ndarray) -> None:
    """Pores (HR scale), mid-scale mottling (1x scale) and sometimes freckles, only on skin."""
    shape = (cv.hr, cv.hr)
    dev = F32(rng.uniform(0.02, 0.05)) * fine
    dev += F32(rng.uniform(0.01, 0.025)) * noise_field(rng, cv.hr // 4, shape)  # 1 cell per output pixel
    dev += F32(rng.uniform(0.01, 0.04)) * noise_field(rng, 6, shape)
    if rng.random() < 0.25:
        spots = np.clip((noise_field(rng, cv.hr // 8, shape) - F32(1.4)) * F32(2), 0, 1)
        dev -= F32(rng.uniform(0.1, 0.3)) * spots * bump(cv.X, cv.Y, 0.0, f.ey + 0.12, 0.3, 0.12)
    cv.tex[:] = 1 + cv.skin * dev


def _fringe(cv: Canvas, f: Face, strands: np.ndarray) -> tuple[Window, np.ndarray, np.ndarray]:
    """Hair over the forehead down to a (possibly slanted, wavy) hairline; painted over makeup."""
    rx = f.a + f.hair_w
    win = cv.window(-rx - 0.05, rx + 0.05, -f.b - f.hair_top - 0.2, 0.0)
    X, Y = cv.local(win)
    line = F32(f.hairline) + F32(f.hair_slope) * X + F32(f.temple) * (X / F32(f.a)) ** 2
    colour, s = _hair_rgb(cv, f, win, strands)
    inside_hair = edge(_hair_distance(f, X, Y) + F32(0.006) * s, 3 * cv.px)
    alpha = edge(Y - line - F32(0.012) * s, 3 * cv.px) * inside_hair
    return win, alpha, colour
