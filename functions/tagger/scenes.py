"""Synthetic hotel photos for the tagger: 64x64 RGB scenes drawn with numpy.

Inside shots are a room (wall, floor, pictures, windows) with a bed and/or a breakfast
buffet; outside shots are a landscape (sky, ground, buildings, trees) with a pool, a sea view
and/or a balcony railing in front. Each object is drawn at a random place, size and colour.

Decoys keep the task from being trivial, as in real photos: a sofa where there is no bed, a
bare table where there is no buffet, blue walls, painted-sky ceilings and picture windows
indoors; blue hills, tennis courts, garden fences, terraces and the hotel's own walls outdoors;
strong lighting and noise everywhere. With ``hard=True`` (the training data) the tagged things
are sometimes hard to see, too: hidden behind a guest or a plant, partly out of the frame, a
sliver of grey sea under an overcast sky, a bed without a headboard, a hazy lens.

>>> import numpy as np
>>> photo = render_scene({"pool", "balcony"}, np.random.default_rng(0))
>>> photo.shape, photo.dtype
((64, 64, 3), dtype('uint8'))
"""

from __future__ import annotations

import numpy as np

SIZE = 64
CHILDREN = {"inside": ("bed", "breakfast_buffet"), "outside": ("balcony", "pool", "sea_view")}
PARENT = {child: parent for parent, children in CHILDREN.items() for child in children}
LABELS = ("inside", "outside", *PARENT)
_Y, _X = np.mgrid[0:SIZE, 0:SIZE]
_SKY_BLUE = (0.45, 0.68, 0.92)


def render_scene(labels: set[str], rng: np.random.Generator, *, hard: bool = False) -> np.ndarray:
    """A 64x64 RGB uint8 photo showing ``labels`` (parents are implied by their children).

    Without ``hard`` every tagged thing is clearly visible (a sample photo, a test case); with
    it, some are hard to make out, as in a real data set.

    >>> photo = render_scene({"sea_view", "balcony"}, np.random.default_rng(0))
    """
    unknown = set(labels) - set(LABELS)
    if unknown:
        raise ValueError(f"unknown labels {sorted(unknown)}; known: {', '.join(LABELS)}")
    labels = set(labels) | {PARENT[label] for label in labels if label in PARENT}
    if len(labels & set(CHILDREN)) != 1:
        raise ValueError(f"a photo is either 'inside' or 'outside', got {sorted(labels)}")
    img = np.zeros((SIZE, SIZE, 3))
    if "inside" in labels:
        _inside(img, labels, rng, hard)
    else:
        _outside(img, labels, rng, hard)
    if hard and rng.random() < 0.3:
        _occluder(img, rng)
    if hard and rng.random() < 0.3:  # haze, glare or a dirty lens: low contrast
        haze = rng.uniform(0.15, 0.45)
        img = img * (1 - haze) + haze * img.mean(axis=(0, 1))
    # Exposure, white balance and sensor noise vary a lot between phones.
    noise = rng.uniform(0.02, 0.06)
    img = img * rng.uniform(0.7, 1.25) + rng.uniform(-0.06, 0.06, 3) + rng.normal(0.0, noise, img.shape)
    img = img[:, ::-1] if rng.random() < 0.5 else img
    return (np.clip(img, 0.0, 1.0) * 255).astype(np.uint8)


def _inside(img: np.ndarray, labels: set[str], rng: np.random.Generator, hard: bool) -> None:
    floor = _room(img, rng)
    # A sofa is bed-sized, but has no pillows on white sheets; a bare table has no dishes.
    bed = "bed" in labels or rng.random() < 0.5
    table = "breakfast_buffet" in labels or rng.random() < 0.5
    lefts = [int(rng.integers(3, 8)), int(rng.integers(32, 36))] if rng.random() < 0.5 else [34, 4]
    if bed:
        left = lefts[0] if table else int(rng.integers(3, 34))
        if "bed" in labels:
            _bed(img, floor, left, rng, headboard=not (hard and rng.random() < 0.25))
        else:
            _sofa(img, floor, left, rng)
    if table:
        dishes = int(rng.integers(7, 18)) if "breakfast_buffet" in labels else 0
        _table(img, floor, lefts[1] if bed else int(rng.integers(2, 38)), dishes, rng)


def _outside(img: np.ndarray, labels: set[str], rng: np.random.Generator, hard: bool) -> None:
    ground = _landscape(img, labels, rng, hard)
    if "pool" in labels:
        _pool(img, ground, rng, hard)
    elif rng.random() < 0.4:  # a blue tennis court: a flat blue rectangle with white lines
        _court(img, ground, rng)
    if "balcony" in labels:
        _balcony(img, rng)
    elif rng.random() < 0.4:  # a garden fence: posts and a rail, low on the ground
        _fence(img, rng)


def _color(rng: np.random.Generator, base: tuple[float, float, float], jitter: float = 0.06) -> np.ndarray:
    return np.clip(np.array(base) + rng.normal(0.0, jitter, 3), 0.0, 1.0)


def _rounded_rect(img: np.ndarray, top: int, left: int, height: int, width: int, radius: int, color) -> None:
    # A point is inside if it lies within `radius` of the rectangle shrunk by `radius`.
    near_y = np.clip(_Y, top + radius, top + height - 1 - radius)
    near_x = np.clip(_X, left + radius, left + width - 1 - radius)
    img[(_Y - near_y) ** 2 + (_X - near_x) ** 2 <= radius**2] = color


def _disc(img: np.ndarray, center_y: float, center_x: float, radius: float, color) -> None:
    img[(_Y - center_y) ** 2 + (_X - center_x) ** 2 <= radius**2] = color


def _room(img: np.ndarray, rng: np.random.Generator) -> int:
    """Wall, floor and wall decorations; returns the row where the floor starts."""
    floor = int(rng.integers(34, 46))
    wall = _SKY_BLUE if rng.random() < 0.1 else (0.85, 0.8, 0.7)  # a blue wall looks like sky
    img[:floor] = _color(rng, wall, 0.1)
    # Wood twice as often as a green carpet (like grass) or grey tiles (like asphalt).
    floors = [(0.5, 0.35, 0.2), (0.5, 0.35, 0.2), (0.3, 0.5, 0.25), (0.6, 0.6, 0.6)]
    img[floor:] = _color(rng, floors[rng.integers(len(floors))], 0.1)
    img[floor:, :: int(rng.integers(5, 10))] *= 0.8  # floorboards
    if rng.random() < 0.15:  # a ceiling painted as a sky
        low = int(rng.integers(6, 14))
        img[:low] = _color(rng, _SKY_BLUE) + np.linspace(-0.1, 0.1, low)[:, None, None]
    if rng.random() < 0.5:  # a picture on the wall
        top, left = int(rng.integers(3, 14)), int(rng.integers(2, 48))
        img[top : top + 12, left : left + 14] = _color(rng, (0.25, 0.2, 0.15))
        img[top + 2 : top + 10, left + 2 : left + 12] = rng.random(3)
    if rng.random() < 0.3:  # a window: sky inside a room, a hard negative for `outside`
        top, left = int(rng.integers(3, 10)), int(rng.integers(2, 44))
        img[top : top + 18, left : left + 18] = 0.95
        img[top + 2 : top + 16, left + 2 : left + 16] = _color(rng, (0.55, 0.75, 0.95))
    elif rng.random() < 0.2:  # a picture window onto a landscape, most of the wall
        top, left, right = int(rng.integers(1, 6)), int(rng.integers(0, 12)), int(rng.integers(52, 64))
        view = np.zeros_like(img)
        _landscape(view, set(), rng, hard=False)
        img[top : floor - 2, left:right] = 0.9
        img[top + 2 : floor - 4, left + 2 : right - 2] = view[top + 2 : floor - 4, left + 2 : right - 2]
    return floor


def _bed(img: np.ndarray, floor: int, left: int, rng: np.random.Generator, headboard: bool) -> None:
    width = int(rng.integers(22, 30))
    if headboard:
        img[floor - 16 : floor, left : left + width] = _color(rng, (0.35, 0.22, 0.12))  # headboard
    white = rng.random() < 0.75  # else a coloured bedspread, like a sofa's fabric
    sheet = _color(rng, (0.95, 0.95, 0.93), 0.03) if white else _color(rng, (0.5, 0.5, 0.5), 0.2)
    _rounded_rect(img, floor - 6, left - 2, 14, width + 4, 3, sheet)
    pillow = _color(rng, (0.98, 0.97, 0.92), 0.02)
    for pillow_left in (left + 1, left + width // 2 + 1):
        _rounded_rect(img, floor - 8, pillow_left, 5, width // 2 - 2, 2, pillow)
    if rng.random() < 0.6:  # a blanket over the foot of the bed
        img[floor + 1 : floor + 8, left - 1 : left + width + 3] = rng.random(3)


def _sofa(img: np.ndarray, floor: int, left: int, rng: np.random.Generator) -> None:
    leather = rng.random() < 0.35  # brown leather, like a headboard
    base = (0.35, 0.22, 0.12) if leather else tuple(rng.uniform(0.15, 0.8, 3))
    width, fabric = int(rng.integers(24, 32)), _color(rng, base, 0.03)
    _rounded_rect(img, floor - 13, left, 11, width, 3, fabric)  # back
    seat = _color(rng, (0.92, 0.9, 0.86), 0.04) if rng.random() < 0.35 else fabric  # a light throw
    _rounded_rect(img, floor - 4, left - 2, 9, width + 4, 2, seat)
    for arm_left in (left - 3, left + width - 1):
        _rounded_rect(img, floor - 8, arm_left, 13, 4, 1, fabric * 0.7)
    if rng.random() < 0.5:  # light cushions, like pillows
        cushion = _color(rng, (0.9, 0.88, 0.82), 0.05)
        for cushion_left in (left + 2, left + width - 8):
            _rounded_rect(img, floor - 9, cushion_left, 5, 6, 2, cushion)


def _table(img: np.ndarray, floor: int, left: int, dishes: int, rng: np.random.Generator) -> None:
    """A table with ``dishes`` plates, fruit and pastries on it, or a vase when there are none."""
    width, top = int(rng.integers(24, 32)), floor - int(rng.integers(0, 6))
    cloth = _color(rng, (0.95, 0.95, 0.95), 0.03) if rng.random() < 0.5 else _color(rng, (0.45, 0.3, 0.15))
    img[top : top + 4, left : left + width] = cloth
    img[top + 4 : top + 14, left + 1 : left + 3] = 0.2  # table legs
    img[top + 4 : top + 14, left + width - 3 : left + width - 1] = 0.2
    for _ in range(dishes):
        y, x = top - rng.uniform(0, 4), left + rng.uniform(1, width - 1)
        _disc(img, y, x, rng.uniform(1.2, 2.6), rng.random(3))
    if not dishes and rng.random() < 0.5:
        x = int(left + rng.uniform(4, width - 6))
        img[top - 6 : top, x : x + 3] = _color(rng, (0.3, 0.5, 0.7), 0.15)
        _disc(img, top - 8, x + 1, 2.0, rng.random(3))  # flowers


def _landscape(img: np.ndarray, labels: set[str], rng: np.random.Generator, hard: bool) -> int:
    """Sky, optional sea, ground, buildings and trees; returns the first row of open ground."""
    horizon = int(rng.integers(16, 32))
    overcast = rng.random() < 0.3
    top_sky = _color(rng, (0.6, 0.62, 0.65) if overcast else (0.2, 0.45, 0.85))
    low_sky = _color(rng, (0.8, 0.8, 0.82) if overcast else (0.7, 0.85, 0.95))
    mix = np.linspace(0.0, 1.0, horizon)[:, None, None]
    img[:horizon] = (1 - mix) * top_sky + mix * low_sky
    for _ in range(int(rng.integers(0, 3))):  # clouds
        _disc(img, rng.uniform(2, horizon - 4), rng.uniform(0, SIZE), rng.uniform(2, 5), 0.97)
    ground = horizon
    if "sea_view" in labels:
        ground = horizon + int(rng.integers(4 if hard else 8, 15))  # from a sliver to a bay
        grey = hard and overcast  # under an overcast sky, like asphalt
        img[horizon:ground] = _color(rng, (0.38, 0.47, 0.58) if grey else (0.1, 0.3, 0.6))
        img[rng.integers(horizon, ground, size=3)] += 0.15  # light on the waves
    elif rng.random() < 0.35:  # blue hills on the horizon: a band much like the sea, but not flat
        ground = horizon + int(rng.integers(6, 13))
        wave = np.sin(_X * rng.uniform(0.08, 0.25) + rng.uniform(0, 6))
        ridge = horizon - rng.uniform(2, 7) * (1 + wave) / 2
        img[:ground][ridge[:ground] <= _Y[:ground]] = _color(rng, (0.3, 0.4, 0.6))
    grounds = [(0.3, 0.55, 0.25), (0.85, 0.75, 0.55), (0.55, 0.55, 0.55)]  # grass, sand, asphalt
    img[ground:] = _color(rng, grounds[rng.integers(len(grounds))])
    if rng.random() < 0.2:  # a wooden terrace, like a floor
        img[ground + 4 :] = _color(rng, (0.5, 0.35, 0.2), 0.1)
        img[ground + 4 :, :: int(rng.integers(5, 10))] *= 0.8
    if rng.random() < 0.3:  # the hotel's own wall at one side, like a room's, maybe with a window
        width = int(rng.integers(10, 40))
        img[:, :width] = _color(rng, (0.85, 0.8, 0.7), 0.1)
        if width > 24 and rng.random() < 0.6:
            top, left = int(rng.integers(3, 10)), int(rng.integers(2, width - 20))
            img[top : top + 18, left : left + 18] = 0.95
            img[top + 2 : top + 16, left + 2 : left + 16] = _color(rng, (0.55, 0.75, 0.95))
    if rng.random() < 0.5:  # a building on the horizon
        height, left, width = int(rng.integers(6, 16)), int(rng.integers(0, 50)), int(rng.integers(8, 16))
        img[horizon - height : horizon, left : left + width] = _color(rng, (0.6, 0.5, 0.45), 0.12)
    if rng.random() < 0.35:  # a tree
        x = rng.uniform(4, 60)
        img[ground - 4 : ground + 6, int(x) : int(x) + 2] = (0.35, 0.22, 0.1)
        _disc(img, ground - 6, x + 1, rng.uniform(3, 6), _color(rng, (0.15, 0.45, 0.15)))
    return ground


def _pool(img: np.ndarray, ground: int, rng: np.random.Generator, hard: bool) -> None:
    height, width = int(rng.integers(6, 11)), int(rng.integers(18, 36))
    top = int(rng.integers(ground + 1, SIZE - height))
    out = width // 3 if hard else 0  # hard: up to a third out of the frame
    left = int(rng.integers(-out, SIZE - width + out))
    if rng.random() < 0.7:  # white coping
        _rounded_rect(img, top - 1, left - 1, height + 2, width + 2, 3, 0.95)
    _rounded_rect(img, top, left, height, width, 2, _color(rng, (0.25, 0.7, 0.85), 0.06))
    img[top + 2 : top + height - 1 : 3, max(left + 2, 0) : left + width - 2] += 0.1  # ripples


def _court(img: np.ndarray, ground: int, rng: np.random.Generator) -> None:
    height, width = int(rng.integers(6, 11)), int(rng.integers(18, 36))
    top, left = int(rng.integers(ground + 1, SIZE - height)), int(rng.integers(0, SIZE - width))
    img[top : top + height, left : left + width] = _color(rng, (0.2, 0.45, 0.75), 0.08)
    img[top + height // 2, left : left + width] = 0.95
    img[top : top + height, left + width // 2] = 0.95


def _balcony(img: np.ndarray, rng: np.random.Generator) -> None:
    rail = int(rng.integers(36, 50))
    color = _color(rng, (0.9, 0.9, 0.9) if rng.random() < 0.5 else (0.15, 0.15, 0.15))
    spacing, thickness = int(rng.integers(3, 6)), int(rng.integers(1, 3))
    img[rail : rail + 2] = color
    for offset in range(thickness):
        img[rail:, int(rng.integers(0, spacing)) + offset :: spacing] = color


def _fence(img: np.ndarray, rng: np.random.Generator) -> None:
    rail, spacing = int(rng.integers(46, 56)), int(rng.integers(4, 8))
    color = _color(rng, (0.9, 0.9, 0.9) if rng.random() < 0.5 else (0.45, 0.3, 0.15))
    img[rail : rail + 2] = color
    img[rail:, int(rng.integers(0, spacing)) :: spacing] = color


def _occluder(img: np.ndarray, rng: np.random.Generator) -> None:
    """A guest or a potted plant in front of the camera, hiding part of the scene."""
    x, width = rng.uniform(0, SIZE), rng.uniform(5, 10)
    top = rng.uniform(20, 44)
    color = _color(rng, (0.15, 0.4, 0.15)) if rng.random() < 0.5 else rng.uniform(0.05, 0.7, 3)
    _rounded_rect(img, int(top), int(x - width / 2), SIZE - int(top) + 4, int(width), 3, color)
    _disc(img, top - width / 2, x, width / 2, color)
