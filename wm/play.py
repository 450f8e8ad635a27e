"""`wm play`: drive a trained agent on one track, on the screen or recorded at full resolution."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from wm.errors import WmError

VIDEO_SUFFIXES = (".mp4", ".gif")


def overlay_text(frame, text: str):
    """(H, W, 3) uint8 frame with `text` drawn in its top-left corner (white on a dark box)."""
    import numpy as np
    from PIL import Image, ImageDraw, ImageFont

    image = Image.fromarray(frame)
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=20)
    box = draw.textbbox((8, 6), text, font=font)
    draw.rectangle((box[0] - 4, box[1] - 3, box[2] + 4, box[3] + 3), fill=(0, 0, 0))
    draw.text((8, 6), text, fill=(255, 255, 255), font=font)
    return np.asarray(image)


def write_video(path: Path, frames: list, fps: float) -> None:
    """MP4 (H.264 through imageio-ffmpeg) or GIF, by suffix; written atomically."""
    import imageio.v3 as iio

    from wm.files import atomic_path

    with atomic_path(path) as tmp:
        if path.suffix == ".mp4":
            # 600x400 frames are multiples of 8: no resize (ffmpeg's default block of 16 would pad to 608)
            iio.imwrite(tmp, frames, extension=".mp4", fps=fps, macro_block_size=8)
        else:
            iio.imwrite(tmp, frames, extension=".gif", duration=1000 / fps, loop=0)


def play_command(
    models: Annotated[Path, typer.Option(help="Folder of the trained agent's model files.")] = Path("models/agent"),
    track: Annotated[
        int | None, typer.Option(help="Track seed (env.reset(seed=...)); default: the first evaluation track.")
    ] = None,
    max_steps: Annotated[int, typer.Option(min=1, help="Steps at most.")] = 1000,
    record: Annotated[
        Path | None,
        typer.Option(help="Record to this .mp4 or .gif (600x400, the return overlaid) instead of a window."),
    ] = None,
) -> None:
    """Drive the trained agent on one track: in a window when there is a screen, or recorded to a video."""
    from wm.agent import load_agent
    from wm.checkpoints import read_published
    from wm.envs import make_car_racing
    from wm.episodes import run_episode
    from wm.runtime import load_runtime
    from wm.seeding import Stream, numpy_rng, track_seed

    if record is not None and record.suffix not in VIDEO_SUFFIXES:
        raise WmError(f"--record {record}: give a file ending in {' or '.join(VIDEO_SUFFIXES)}")
    if record is None and sys.platform.startswith("linux") and not os.environ.get("DISPLAY"):
        raise WmError("no screen here (DISPLAY is not set): pass --record video.mp4 to record the drive instead")
    agent = load_agent(models)
    if track is None:
        seed = read_published(models / "controller.pt", "controller").fingerprint["seed"]
        track = track_seed(seed, Stream.EVAL, 0)
    env = make_car_racing(
        fast=load_runtime().fast_env,
        max_episode_steps=max_steps,
        render_mode="human" if record is None else "rgb_array",
    )
    frames, total = [], 0.0

    def on_step(reward: float) -> None:
        nonlocal total
        total += reward
        if record is not None:
            frames.append(overlay_text(env.render(), f"return {total:7.1f}   step {len(frames) + 1}"))

    episode = run_episode(env, agent, track, numpy_rng(0, Stream.EVAL, 0), max_steps, on_step=on_step)
    env.close()
    if record is not None:
        write_video(record, frames, fps=env.metadata.get("render_fps", 50))
    print(
        f"play: track {track}: return {episode.ret:.1f} in {episode.steps} steps" + (f" -> {record}" if record else "")
    )
