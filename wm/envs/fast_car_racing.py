"""Pixel-identical, faster rendering for gymnasium's ``CarRacing-v3``.

Stock ``CarRacing`` spends ~95% of a step drawing: every frame it rotates each vertex of the background,
400 grass patches and every road polygon with ``pygame.math.Vector2`` in Python, culls them one by one,
builds a new font, draws a 1000x800 frame, flips it and smooth-scales it to the 96x96 observation.
:class:`FastCarRacing` produces bit-identical observations, rewards, flags and info with much less work:

* **Vectorised transform, per-track geometry.** On the first frame after each ``reset`` (detected by the
  identity of ``road_poly``) the grass and road quads are stacked into one vertex array, with each
  quad's centre and radius and references to the road colour arrays (which the contact listener
  rewrites in place, so colours are read every frame). Each frame rotates the vertices with numpy using
  the very cosine and sine ``Vector2.rotate_rad`` uses (read off ``Vector2(1, 0).rotate_rad(angle)``,
  which also reproduces its exact 0/90/180/270-degree special cases) and the same float64 operations in
  the same order, so the floats handed to ``gfxdraw`` are bit-identical to stock's.
* **Exact culling.** A quad is drawn only if stock would draw it (a vertex inside the
  ``MAX_SHAPE_DIM``-padded window) *and* its bounding box, padded for the antialiased outline and the
  float->int truncation, reaches a pixel that survives into the observation. The first ``PANEL_H`` rows
  of the unflipped frame never survive: after the flip the black indicator panel covers them. A cheap
  test on quad centres picks the few dozen candidates first.
* **Plain fill for the background.** When the background square covers the window with a margin, its
  antialiased outline is clipped away and its fill colours every pixel, so a plain fill is equivalent.
  The fill is written through numpy: SDL's fill uses non-temporal stores that push the frame out of the
  cache, and every later step (antialiased blending reads the pixels it draws over, smoothscale reads
  all of them) then waits on memory. The panel's black backdrop is filled the same way when pygame
  paints that quad as exactly the panel rows (checked once per process).
* **Split smooth-scale.** pygame's ``smoothscale`` shrinks X first (row by row, independently) and then
  Y (from an intermediate buffer). The two passes as two calls give the same bytes, so the world rows are
  X-shrunk unflipped, only the 96-pixel-wide strip is flipped, the panel (indicators, score) is drawn
  and X-shrunk from its own surface, and one Y pass finishes the observation. This drops the 1000x800
  flip; all surfaces are reused instead of allocated per frame.
* **Car and text.** The car's view transform is batched (Box2D's own float32 body transforms are kept);
  the font is built once and score text surfaces are cached by string.

* **Blind episodes.** With ``blind`` set, ``state_pixels`` observations are not drawn at all (each one is
  an all-zero array): a policy that reads no frames (the random data policy of the evaluation
  baseline) gets the same physics, rewards, flags and info ~10x faster. Drawing has no effect on the
  simulation: stock ``step`` renders after ``world.Step`` and computes the reward from the contact
  listener's tile count.

If an indicator bar grows above the panel (stock lets it paint over the world) or the score text would,
the frame falls back to stock's flip-then-draw order. Only the ``state_pixels`` observation takes the
fast path; ``render()`` in ``human``/``rgb_array`` mode runs the stock ``_render`` (with the exact
vectorised road drawing). ``self.surf`` holds the unflipped world after a fast frame, not stock's
flipped frame with the panel.
"""

from __future__ import annotations

import functools
import math

import gymnasium
import numpy as np
import pygame
from gymnasium.envs.box2d.car_dynamics import SIZE, WHEEL_R, WHEEL_W, WHEEL_WHITE
from gymnasium.envs.box2d.car_racing import (
    GRASS_DIM,
    MAX_SHAPE_DIM,
    PLAYFIELD,
    SCALE,
    STATE_H,
    STATE_W,
    WINDOW_H,
    WINDOW_W,
    ZOOM,
    CarRacing,
)
from pygame import gfxdraw

_GYM_VERSION = tuple(int(part) for part in gymnasium.__version__.split(".")[:2])

# Rows of the unflipped window that end up under the indicator panel (the bottom 5/40 of the window).
PANEL_H = round(WINDOW_H * 5 / 40)
PANEL_TOP = WINDOW_H - PANEL_H
WORLD_H = WINDOW_H - PANEL_H
# Antialiased outlines reach one pixel beyond the integer vertex box; one more absorbs float->int rounding.
AA_PAD = 2


def _grass_polygons() -> np.ndarray:
    """The 400 grass patches exactly as ``CarRacing._render_road`` builds them (same float expressions)."""
    grass = []
    for x in range(-20, 20, 2):
        for y in range(-20, 20, 2):
            grass.append(
                [
                    (GRASS_DIM * x + GRASS_DIM, GRASS_DIM * y + 0),
                    (GRASS_DIM * x + 0, GRASS_DIM * y + 0),
                    (GRASS_DIM * x + 0, GRASS_DIM * y + GRASS_DIM),
                    (GRASS_DIM * x + GRASS_DIM, GRASS_DIM * y + GRASS_DIM),
                ]
            )
    return np.array(grass, dtype=np.float64)


_FIELD = np.array(
    [[(PLAYFIELD, PLAYFIELD), (PLAYFIELD, -PLAYFIELD), (-PLAYFIELD, -PLAYFIELD), (-PLAYFIELD, PLAYFIELD)]],
    dtype=np.float64,
)
_GRASS = _grass_polygons()
# Centre and half-extent of the pixel block that reaches the observation: columns 0..W-1, rows PANEL_H..H-1.
_VISIBLE_MID = ((WINDOW_W - 1) / 2, (PANEL_H + WINDOW_H - 1) / 2)
_VISIBLE_HALF = ((WINDOW_W - 1) / 2, (WINDOW_H - 1 - PANEL_H) / 2)
_PADDED_CORNERS = [
    (-AA_PAD, -AA_PAD),
    (WINDOW_W + AA_PAD, -AA_PAD),
    (WINDOW_W + AA_PAD, WINDOW_H + AA_PAD),
    (-AA_PAD, WINDOW_H + AA_PAD),
]


class FastCarRacing(CarRacing):
    """``CarRacing`` with a faster, pixel-identical ``state_pixels`` renderer (see the module docstring)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._geometry_for = None  # the road_poly list the cached vertex array was built from
        self._vertices = np.empty((0, 4, 2))
        self._centers = np.empty((0, 2))
        self._radii = np.empty(0)
        self._road_colors: list = []
        self._world = pygame.Surface((WINDOW_W, WINDOW_H))
        self._panel = pygame.Surface((WINDOW_W, WINDOW_H))
        self._strip = pygame.Surface((STATE_W, WINDOW_H))
        self._world_rows = self._world.subsurface((0, PANEL_H, WINDOW_W, WORLD_H))
        self._panel_rows = self._panel.subsurface((0, PANEL_TOP, WINDOW_W, PANEL_H))
        self._world_x = pygame.Surface((STATE_W, WORLD_H))
        self._strip_panel = self._strip.subsurface((0, PANEL_TOP, STATE_W, PANEL_H))
        self._state = pygame.Surface((STATE_W, STATE_H))
        self._shapes_for = None  # the Car whose fixture vertices _shapes holds
        self._shapes: list = []
        self._font: pygame.font.Font | None = None
        self._text_cache: dict[str, pygame.Surface] = {}
        self.blind = False  # skip drawing state_pixels observations (module docstring, "Blind episodes")

    # -- geometry -------------------------------------------------------------------------------------

    def _sync_geometry(self) -> None:
        if self._geometry_for is self.road_poly:
            return
        road = np.array([poly for poly, _ in self.road_poly], dtype=np.float64).reshape(-1, 4, 2)
        self._vertices = np.concatenate([_GRASS, road])
        self._centers = self._vertices.mean(axis=1)
        self._radii = np.linalg.norm(self._vertices - self._centers[:, None, :], axis=2).max(axis=1)
        # Tile colours are numpy arrays that the contact listener rewrites in place, so keep references.
        self._road_colors = [color for _, color in self.road_poly]
        self._geometry_for = self.road_poly

    def _render_road(self, zoom, translation, angle):
        self._sync_geometry()
        cos, sin = pygame.math.Vector2(1.0, 0.0).rotate_rad(angle)
        surf = self.surf

        if _covers_window(cos, sin, zoom, translation):
            # Rows above PANEL_H never reach the observation, so they need no paint. Written through
            # numpy rather than Surface.fill: SDL fills with non-temporal stores, which leave the frame
            # out of cache just before smoothscale reads all of it back (about twice as slow).
            pygame.surfarray.pixels2d(surf)[:, PANEL_H:] = surf.map_rgb(self.bg_color)
        else:
            # Stock draws on a fresh (black) surface each frame; ours is reused.
            surf.fill((0, 0, 0))
            fx, fy = _transform(_FIELD[0], cos, sin, zoom, translation)
            gfxdraw.aapolygon(surf, _points(fx, fy), self.bg_color)
            gfxdraw.filled_polygon(surf, _points(fx, fy), self.bg_color)

        # Coarse pre-selection on polygon centres (any polygon that can touch the visible rows has its
        # centre within its radius of them); the exact tests below then run on a few dozen polygons only.
        rotate = np.array([[cos, sin], [-sin, cos]]) * zoom
        offset = np.array([translation[0] - _VISIBLE_MID[0], translation[1] - _VISIBLE_MID[1]])
        from_mid = np.abs(self._centers @ rotate + offset)
        reach = self._radii * zoom + (AA_PAD + 1)
        near = np.flatnonzero(
            (from_mid[:, 0] <= _VISIBLE_HALF[0] + reach) & (from_mid[:, 1] <= _VISIBLE_HALF[1] + reach)
        )
        px, py = _transform(self._vertices[near], cos, sin, zoom, translation)
        in_x = (px >= -MAX_SHAPE_DIM) & (px <= WINDOW_W + MAX_SHAPE_DIM)
        in_y = (py >= -MAX_SHAPE_DIM) & (py <= WINDOW_H + MAX_SHAPE_DIM)
        stock_draws = (in_x & in_y).any(axis=1)
        touches = (
            (px.max(axis=1) >= -AA_PAD)
            & (px.min(axis=1) <= WINDOW_W - 1 + AA_PAD)
            & (py.max(axis=1) >= PANEL_H - AA_PAD)
            & (py.min(axis=1) <= WINDOW_H - 1 + AA_PAD)
        )
        keep = stock_draws & touches
        n_grass = len(_GRASS)
        for i, pxs, pys in zip(near[keep].tolist(), px[keep].tolist(), py[keep].tolist(), strict=True):
            # Stock passes the grass colour array as is and converts road colours with int().
            color = self.grass_color if i < n_grass else [int(c) for c in self._road_colors[i - n_grass]]
            poly = list(zip(pxs, pys, strict=True))
            gfxdraw.aapolygon(surf, poly, color)
            gfxdraw.filled_polygon(surf, poly, color)

    def _draw_car(self, zoom, translation, angle):
        """``Car.draw`` without particles (as in ``state_pixels``), with the view transform vectorised.

        The body transforms still go through Box2D's own ``b2Transform * b2Vec2`` (float32 arithmetic
        that numpy would have to imitate); only the float64 rotation and zoom are batched.
        """
        car = self.car
        assert car is not None
        if self._shapes_for is not car:
            # Fixture shapes are fixed for a car's lifetime; Box2D builds a fresh list on every read.
            self._shapes = [[f.shape.vertices for f in obj.fixtures] for obj in car.drawlist]
            self._shapes_for = car
        paths = []
        colors = []
        for obj, shapes in zip(car.drawlist, self._shapes, strict=True):
            color = [int(c * 255) for c in obj.color]
            trans = obj.transform  # stock reads it per fixture as f.body.transform: the same body
            for vertices in shapes:
                paths.append([trans * v for v in vertices])
                colors.append(color)
                if "phase" not in obj.__dict__:
                    continue
                a1 = obj.phase
                a2 = obj.phase + 1.2  # radians
                s1 = math.sin(a1)
                s2 = math.sin(a2)
                c1 = math.cos(a1)
                c2 = math.cos(a2)
                if s1 > 0 and s2 > 0:
                    continue
                if s1 > 0:
                    c1 = np.sign(c1)
                if s2 > 0:
                    c2 = np.sign(c2)
                white_poly = [
                    (-WHEEL_W * SIZE, +WHEEL_R * c1 * SIZE),
                    (+WHEEL_W * SIZE, +WHEEL_R * c1 * SIZE),
                    (+WHEEL_W * SIZE, +WHEEL_R * c2 * SIZE),
                    (-WHEEL_W * SIZE, +WHEEL_R * c2 * SIZE),
                ]
                paths.append([trans * v for v in white_poly])
                colors.append(WHEEL_WHITE)

        world = np.array([(v[0], v[1]) for path in paths for v in path], dtype=np.float64)
        cos, sin = pygame.math.Vector2(1.0, 0.0).rotate_rad(angle)
        xs, ys = _transform(world, cos, sin, zoom, translation)
        points = list(zip(xs.tolist(), ys.tolist(), strict=True))
        start = 0
        for path, color in zip(paths, colors, strict=True):
            end = start + len(path)
            pygame.draw.polygon(self.surf, color=color, points=points[start:end])
            start = end

    # -- indicators and text --------------------------------------------------------------------------

    def _indicator_polygons(self, W, H):
        """The indicator quads and colours stock ``_render_indicators`` would draw, in its order."""
        s = W / 40.0
        h = H / 40.0
        polys = [_backdrop(W, H)]

        def vertical_ind(place, val):
            return [
                (place * s, H - (h + h * val)),
                ((place + 1) * s, H - (h + h * val)),
                ((place + 1) * s, H - h),
                ((place + 0) * s, H - h),
            ]

        def horiz_ind(place, val):
            return [
                ((place + 0) * s, H - 4 * h),
                ((place + val) * s, H - 4 * h),
                ((place + val) * s, H - 2 * h),
                ((place + 0) * s, H - 2 * h),
            ]

        car = self.car
        assert car is not None
        true_speed = np.sqrt(np.square(car.hull.linearVelocity[0]) + np.square(car.hull.linearVelocity[1]))
        wheels = car.wheels
        candidates = [
            (true_speed, vertical_ind(5, 0.02 * true_speed), (255, 255, 255)),
            (wheels[0].omega, vertical_ind(7, 0.01 * wheels[0].omega), (0, 0, 255)),
            (wheels[1].omega, vertical_ind(8, 0.01 * wheels[1].omega), (0, 0, 255)),
            (wheels[2].omega, vertical_ind(9, 0.01 * wheels[2].omega), (51, 0, 255)),
            (wheels[3].omega, vertical_ind(10, 0.01 * wheels[3].omega), (51, 0, 255)),
            (wheels[0].joint.angle, horiz_ind(20, -10.0 * wheels[0].joint.angle), (0, 255, 0)),
            (car.hull.angularVelocity, horiz_ind(30, -0.8 * car.hull.angularVelocity), (255, 0, 0)),
        ]
        polys.extend((points, color) for value, points, color in candidates if abs(value) > 1e-4)
        return polys

    def _render_indicators(self, W, H):
        for points, color in self._indicator_polygons(W, H):
            pygame.draw.polygon(self.surf, points=points, color=color)

    def _score_text(self) -> pygame.Surface:
        string = _score_string(self.reward)
        text = self._text_cache.get(string)
        if text is None:
            if self._font is None:
                self._font = _score_font()
            try:
                text = self._font.render(string, True, (255, 255, 255), (0, 0, 0))
            except pygame.error:
                # pygame.quit() (closing any human-mode env does it) invalidates fonts built before it.
                self._font = _score_font()
                text = self._font.render(string, True, (255, 255, 255), (0, 0, 0))
            self._text_cache[string] = text
        return text

    def _score_rect(self, text: pygame.Surface) -> pygame.Rect:
        rect = text.get_rect()
        rect.center = (60, WINDOW_H - WINDOW_H * 2.5 / 40.0)
        return rect

    # -- frame ----------------------------------------------------------------------------------------

    def _render(self, mode):
        if mode != "state_pixels":
            return super()._render(mode)
        if self.blind:
            return np.zeros((STATE_H, STATE_W, 3), dtype=np.uint8)  # a fresh array, as a drawn frame is
        pygame.font.init()
        if "t" not in self.__dict__:
            return None  # reset() not called yet
        assert self.car is not None

        # Same transform arithmetic as stock, so every coordinate below is bit-identical.
        angle = -self.car.hull.angle
        zoom = 0.1 * SCALE * max(1 - self.t, 0) + ZOOM * SCALE * min(self.t, 1)
        scroll_x = -(self.car.hull.position[0]) * zoom
        scroll_y = -(self.car.hull.position[1]) * zoom
        trans = pygame.math.Vector2((scroll_x, scroll_y)).rotate_rad(angle)
        trans = (WINDOW_W / 2 + trans[0], WINDOW_H / 4 + trans[1])

        self.surf = self._world
        self._render_road(zoom, trans, angle)
        self._draw_car(zoom, trans, angle)

        indicators = self._indicator_polygons(WINDOW_W, WINDOW_H)
        text = self._score_text()
        text_rect = self._score_rect(text)
        panel_only = text_rect.top >= PANEL_TOP and all(
            min(p[1] for p in points) >= PANEL_TOP for points, _ in indicators
        )
        if not panel_only:
            return self._render_state_stock_order(indicators, text, text_rect)

        panel = self._panel
        backdrop, bars = indicators[0], indicators[1:]
        if _backdrop_is_panel_rows():
            # Same pixels as drawing the quad, but cache-friendly (see _render_road).
            pygame.surfarray.pixels2d(panel)[:, PANEL_TOP:] = panel.map_rgb(backdrop[1])
        else:
            bars = indicators
        for points, color in bars:
            pygame.draw.polygon(panel, points=points, color=color)
        panel.blit(text, text_rect)

        # X pass of the world (unflipped, visible rows only), flipped as a narrow strip; X pass of the panel;
        # then the Y pass over both: the same two passes one smoothscale call makes over the flipped frame.
        pygame.transform.smoothscale(self._world_rows, (STATE_W, WORLD_H), self._world_x)
        strip = self._strip
        strip.blit(pygame.transform.flip(self._world_x, False, True), (0, 0))
        pygame.transform.smoothscale(self._panel_rows, (STATE_W, PANEL_H), self._strip_panel)
        pygame.transform.smoothscale(strip, (STATE_W, STATE_H), self._state)
        return np.array(pygame.surfarray.pixels3d(self._state)).transpose(1, 0, 2)

    def _render_state_stock_order(self, indicators, text, text_rect):
        self.surf = pygame.transform.flip(self._world, False, True)
        for points, color in indicators:
            pygame.draw.polygon(self.surf, points=points, color=color)
        self.surf.blit(text, text_rect)
        return self._create_image_array(self.surf, (STATE_W, STATE_H))


def _backdrop(W: int, H: int) -> tuple[list, tuple[int, int, int]]:
    """The black quad stock ``_render_indicators`` draws first, behind the indicator bars."""
    h = H / 40.0
    return [(W, H), (W, H - 5 * h), (0, H - 5 * h), (0, H)], (0, 0, 0)


@functools.cache
def _backdrop_is_panel_rows() -> bool:
    """Whether pygame paints the indicators' black backdrop quad as exactly the window rows PANEL_TOP..."""
    probe = pygame.Surface((WINDOW_W, WINDOW_H))
    probe.fill((255, 255, 255))
    points, color = _backdrop(WINDOW_W, WINDOW_H)
    pygame.draw.polygon(probe, points=points, color=color)
    painted = pygame.surfarray.pixels2d(probe) == probe.map_rgb(color)
    return bool(painted[:, PANEL_TOP:].all() and not painted[:, :PANEL_TOP].any())


def _score_string(reward: float) -> str:
    """The score text exactly as the installed gymnasium's ``CarRacing._render`` formats it."""
    if _GYM_VERSION < (1, 3):
        return f"{int(reward):04d}"  # "%04i" % reward
    if _GYM_VERSION < (1, 4):
        return f"{reward:04}"
    return f"{reward:04.0f}"


def _score_font() -> pygame.font.Font:
    return pygame.font.Font(pygame.font.get_default_font(), 42)


def _transform(points: np.ndarray, cos: float, sin: float, zoom: float, translation) -> tuple:
    """Stock's ``Vector2(p).rotate_rad(angle)`` then ``* zoom + translation``, as the same float64 ops."""
    x = points[..., 0]
    y = points[..., 1]
    return (cos * x - sin * y) * zoom + translation[0], (sin * x + cos * y) * zoom + translation[1]


def _points(xs: np.ndarray, ys: np.ndarray) -> list[tuple[float, float]]:
    return list(zip(xs.tolist(), ys.tolist(), strict=True))


def _covers_window(cos: float, sin: float, zoom: float, translation) -> bool:
    """True if the background square contains the window grown by ``AA_PAD`` pixels, with room to spare.

    Then its filled polygon paints every pixel and its antialiased outline lies wholly outside the
    surface's clip rectangle, so nothing of the outline is drawn. Tested in world units: each padded
    window corner is mapped back through the (orthonormal) rotation and zoom and must lie ``AA_PAD + 1``
    pixels inside the square, which absorbs the float->int truncation of the drawn vertices.
    """
    limit = PLAYFIELD - (AA_PAD + 1) / zoom
    for wx, wy in _PADDED_CORNERS:
        dx = (wx - translation[0]) / zoom
        dy = (wy - translation[1]) / zoom
        if abs(cos * dx + sin * dy) >= limit or abs(-sin * dx + cos * dy) >= limit:
            return False
    return True
