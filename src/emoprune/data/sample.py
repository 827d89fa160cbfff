"""A generated stand-in for SFEW, which may not be redistributed.

Same layout (``<OUT>/<Emotion>/<Movie>_<clip>_<frame>.png``, RGB 720x576) and the same kinds of
difficulty: a cluttered "movie" background, one face that varies in scale, position, in-plane
rotation, simulated yaw, skin tone, lighting, blur and noise, and an expression drawn from
per-class parameters that overlap for the pairs people confuse too (fear/surprise,
angry/disgust, sad/neutral). Frames of one clip share the movie, actor and framing, as in SFEW.

Deterministic: every frame is seeded by (seed, class, clip, frame), and PNGs carry no timestamps,
so the same command writes the same bytes on every run.

    python -m emoprune.data.sample data/raw [--per-class 60] [--seed 0]
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from emoprune.choices import EMOTIONS
from emoprune.data.ingest import SAMPLE_MARKER

WIDTH, HEIGHT = 720, 576
FACE_CANVAS = 256  # faces are drawn at this size, then scaled, so strokes stay proportional
MOVIES = (
    "Airheads",
    "BlackSwan",
    "CryingGame",
    "DeepBlue",
    "Harbour",
    "Hellboy",
    "IAmSam",
    "Insomnia",
    "MilkRun",
    "Nightshift",
    "Redline",
    "TheTerminal",
    "Unforgiven",
    "Zodiac",
)
# Scenes per movie: clips of every emotion from one movie share its backgrounds, as in SFEW, so
# the background tells the movie, not the emotion.
SCENES_PER_MOVIE = 1

# Per-class expression means: brow angle (deg, + = inner ends down), brow height, eye openness,
# mouth curvature (+ = smile), mouth openness, mouth width. The per-frame spread (EXPR_SPREAD) is
# wide enough that the confusable pairs overlap.
EXPRESSIONS = {
    "Angry": (22.0, -0.45, 0.55, -0.25, 0.10, 0.85),
    "Disgust": (14.0, -0.30, 0.40, -0.45, 0.25, 0.95),
    "Fear": (-14.0, 0.55, 0.95, -0.15, 0.45, 0.95),
    "Happy": (0.0, 0.10, 0.55, 0.85, 0.35, 1.20),
    "Neutral": (0.0, 0.00, 0.65, 0.00, 0.03, 1.00),
    "Sad": (-16.0, 0.05, 0.50, -0.45, 0.03, 0.90),
    "Surprise": (-6.0, 0.85, 1.05, 0.05, 0.80, 0.80),
}
EXPR_SPREAD = np.array([8.0, 0.22, 0.17, 0.25, 0.15, 0.12])


@dataclass(frozen=True)
class Actor:
    """What stays fixed within a clip."""

    skin: np.ndarray  # RGB
    hair: np.ndarray
    cx: float  # face centre, pixels
    cy: float
    size: float  # face height, pixels
    yaw: float  # -1..1
    roll: float  # degrees


def class_counts(per_class: int, classes: tuple[str, ...] = EMOTIONS) -> dict[str, int]:
    """SFEW's 100/75 ratio: Disgust gets three quarters of the others."""
    return {c: (per_class * 3 + 3) // 4 if c == "Disgust" else per_class for c in classes}


def _background(rng: np.random.Generator) -> Image.Image:
    """A cluttered scene: a lit gradient, furniture-like blocks, lines and blobs, softly blurred."""
    base = rng.uniform(20, 200, size=3)
    tint = rng.uniform(-60, 60, size=3)
    t = np.linspace(0.0, 1.0, HEIGHT, dtype=np.float32)[:, None, None]
    grad = np.clip(base + tint * t, 0, 255).astype(np.uint8)
    img = Image.fromarray(np.broadcast_to(grad, (HEIGHT, WIDTH, 3)).copy())
    draw = ImageDraw.Draw(img)
    for _ in range(rng.integers(8, 20)):
        x0, y0 = rng.uniform(-100, WIDTH), rng.uniform(-100, HEIGHT)
        w, h = rng.uniform(30, 300), rng.uniform(30, 300)
        fill = tuple(int(v) for v in rng.integers(0, 256, size=3))
        if rng.random() < 0.6:
            draw.rectangle((x0, y0, x0 + w, y0 + h), fill=fill)
        else:
            draw.ellipse((x0, y0, x0 + w, y0 + h), fill=fill)
    for _ in range(rng.integers(5, 15)):
        pts = rng.uniform(0, 1, size=4) * (WIDTH, HEIGHT, WIDTH, HEIGHT)
        fill = tuple(int(v) for v in rng.integers(0, 256, size=3))
        draw.line(tuple(pts), fill=fill, width=int(rng.integers(1, 6)))
    return img.filter(ImageFilter.GaussianBlur(float(rng.uniform(1.0, 4.0))))


def _actor(rng: np.random.Generator) -> Actor:
    tone = rng.uniform(0.0, 1.0)  # dark to light skin
    skin = np.array([95 + 140 * tone, 60 + 130 * tone, 40 + 120 * tone]) * rng.uniform(0.9, 1.1, 3)
    return Actor(
        skin=np.clip(skin, 0, 255),
        hair=rng.uniform(10, 120, size=3),
        cx=rng.uniform(0.3, 0.7) * WIDTH,
        cy=rng.uniform(0.35, 0.65) * HEIGHT,
        size=rng.uniform(150, 330),
        yaw=rng.uniform(-0.6, 0.6),
        roll=rng.uniform(-15, 15),
    )


def _face(actor: Actor, expr: np.ndarray, yaw: float) -> Image.Image:
    """An RGBA face on a FACE_CANVAS square: head, hair, brows, eyes, nose, mouth."""
    s = FACE_CANVAS
    img = Image.new("RGBA", (s, s), (0, 0, 0, 0))
    d = ImageDraw.Draw(img)
    skin = tuple(int(v) for v in actor.skin) + (255,)
    dark = tuple(int(v) for v in actor.skin * 0.35) + (255,)
    hair = tuple(int(v) for v in actor.hair) + (255,)
    half_w = 0.36 * s * math.cos(yaw * 0.8)  # a turned head looks narrower
    shift = 0.12 * s * yaw  # ...and its features slide towards the turned side
    cx, cy = s / 2, s / 2
    d.ellipse((cx - half_w - 6, cy - 0.47 * s, cx + half_w + 6, cy + 0.1 * s), fill=hair)
    d.ellipse((cx - half_w, cy - 0.42 * s, cx + half_w, cy + 0.46 * s), fill=skin)
    brow_angle, brow_h, eye_open, curve, mouth_open, mouth_w = expr
    fx = cx + shift
    for side in (-1, 1):
        ex = fx + side * 0.15 * s * math.cos(yaw * 0.8)
        ey = cy - 0.06 * s
        eh = max(1.0, 0.045 * s * max(eye_open, 0.05))
        d.ellipse((ex - 0.065 * s, ey - eh, ex + 0.065 * s, ey + eh), fill=(240, 240, 235, 255))
        r = min(eh, 0.03 * s)
        d.ellipse((ex - r, ey - r, ex + r, ey + r), fill=(30, 20, 15, 255))
        # Brow: a thick segment whose inner end moves by brow_angle (down for anger).
        by = ey - 0.085 * s - brow_h * 0.05 * s
        dy = math.tan(math.radians(brow_angle)) * 0.06 * s
        inner = (fx + side * 0.06 * s, by + dy)
        outer = (fx + side * 0.21 * s, by - dy)
        d.line((inner, outer), fill=dark, width=max(2, int(0.025 * s)))
    d.line(
        ((fx, cy - 0.02 * s), (fx - 0.03 * s, cy + 0.1 * s), (fx + 0.01 * s, cy + 0.11 * s)),
        fill=dark,
        width=2,
    )
    # Mouth: a parabola for the curvature, filled when open.
    my, mw = cy + 0.23 * s, 0.13 * s * mouth_w
    xs = np.linspace(-1, 1, 21)
    upper = [(fx + x * mw, my - curve * 0.05 * s * (x * x)) for x in xs]
    gap = mouth_open * 0.09 * s
    lower = [(fx + x * mw, my - curve * 0.05 * s * (x * x) + gap * (1 - x * x)) for x in xs]
    if gap > 2:
        d.polygon(upper + lower[::-1], fill=(70, 15, 20, 255))
    d.line(upper, fill=(120, 40, 45, 255), width=max(2, int(0.02 * s)))
    if gap > 2:
        d.line(lower, fill=(120, 40, 45, 255), width=max(2, int(0.015 * s)))
    return img


def render_frame(
    actor: Actor, expr: np.ndarray, rng: np.random.Generator, background: Image.Image
) -> Image.Image:
    """One RGB 720x576 frame: the face composited on the clip's background, then degraded."""
    jitter = rng.normal(0, 1, 4)
    yaw = float(np.clip(actor.yaw + 0.1 * jitter[0], -0.9, 0.9))
    face = _face(actor, expr, yaw)
    size = max(40, int(actor.size * (1 + 0.05 * jitter[1])))
    face = face.resize((size, size), Image.Resampling.BILINEAR)
    face = face.rotate(actor.roll + 3 * jitter[2], resample=Image.Resampling.BILINEAR, expand=True)
    frame = background.copy()
    x = int(actor.cx + 8 * jitter[3] - face.width / 2)
    y = int(actor.cy + 8 * jitter[0] - face.height / 2)
    frame.paste(face, (x, y), face)
    # Lighting: a gain ramp in a random direction; then blur and sensor noise.
    angle = rng.uniform(0, 2 * math.pi)
    xs = (np.arange(WIDTH, dtype=np.float32) / WIDTH - 0.5) * math.cos(angle)
    ys = (np.arange(HEIGHT, dtype=np.float32) / HEIGHT - 0.5) * math.sin(angle)
    gain = rng.uniform(0.7, 1.1) + rng.uniform(0.0, 0.6) * (ys[:, None] + xs[None, :])
    blur = rng.uniform(0.0, 2.0)
    if blur > 0.3:
        frame = frame.filter(ImageFilter.GaussianBlur(blur))
    arr = np.asarray(frame, dtype=np.float32) * gain[..., None]
    arr += rng.uniform(2.0, 10.0) * rng.standard_normal(arr.shape, dtype=np.float32)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


def _generate_class(out: Path, label: int, count: int, seed: int) -> int:
    """Write one emotion's ``count`` frames; returns how many were written."""
    emotion = EMOTIONS[label]
    folder = out / emotion
    folder.mkdir(parents=True, exist_ok=True)
    mean = np.array(EXPRESSIONS[emotion])
    written, clip = 0, 0
    while written < count:
        crng = np.random.default_rng([seed, label, clip])
        movie = MOVIES[int(crng.integers(len(MOVIES)))]
        clip_id = int(crng.integers(10**8, 10**9))
        actor = _actor(crng)
        _background(crng)  # the clip's old draw: keeps its stream, and so the measured sample
        scene = int(crng.integers(SCENES_PER_MOVIE))
        background = _background(np.random.default_rng([seed, 1000 + MOVIES.index(movie), scene]))
        style = crng.normal(0, 1, 6) * EXPR_SPREAD  # the actor's way of showing it
        start = int(crng.integers(1, 5000))
        for f in range(min(int(crng.integers(1, 5)), count - written)):
            frng = np.random.default_rng([seed, label, clip, f])
            expr = mean + style + frng.normal(0, 0.35, 6) * EXPR_SPREAD
            frame = render_frame(actor, expr, frng, background)
            name = f"{movie}_{clip_id:09d}_{start + 7 * f:08d}.png"
            # Level 1: noisy frames barely compress further, and encoding dominates the run time.
            frame.save(folder / name, format="PNG", compress_level=1)
            written += 1
        clip += 1
    return written


def generate(
    out: str | Path,
    per_class: int = 60,
    seed: int = 0,
    progress: bool = False,
    workers: int | None = None,
) -> int:
    """Write the sample under ``out``; returns the number of frames written.

    Frames come in clips of 1 to 4 consecutive frames from one movie, like SFEW's. Classes are
    rendered in parallel processes; each is seeded on its own, so the bytes don't depend on it.
    """
    if per_class < 1:
        raise ValueError(f"per_class must be >= 1, got {per_class}")
    out = Path(out)
    counts = class_counts(per_class)
    workers = workers or min(len(EMOTIONS), os.cpu_count() or 1)
    with ProcessPoolExecutor(workers) as pool:
        jobs = [
            pool.submit(_generate_class, out, label, counts[e], seed)
            for label, e in enumerate(EMOTIONS)
        ]
        total = 0
        for emotion, job in zip(EMOTIONS, jobs):
            written = job.result()
            total += written
            if progress:
                print(f"  {emotion}: {written} frames", file=sys.stderr)
    # Beside the class folders (ingest skips stray files): tells every report that these numbers
    # come from the generated sample, not from SFEW.
    (out / SAMPLE_MARKER).write_text(
        f"Generated by `python -m emoprune.data.sample` (per_class={per_class}, seed={seed}).\n"
        "Not SFEW: results on it show the pipeline works, not how well faces are read.\n"
    )
    return total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m emoprune.data.sample",
        description="Generate an SFEW-like sample (7 emotion folders of 720x576 RGB PNG frames).",
    )
    parser.add_argument("out", help="output folder, e.g. data/raw")
    parser.add_argument(
        "--per-class",
        type=int,
        default=60,
        help="frames per class (Disgust gets 3/4 of it); 100 gives SFEW's 675",
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.per_class < 1:
        parser.error(f"--per-class must be >= 1, got {args.per_class}")
    n = generate(args.out, args.per_class, args.seed, progress=True)
    print(f"wrote {n} frames to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
