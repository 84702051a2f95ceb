"""MP4/MOV clips counted and sought from their index (`media.mp4_index`) decode exactly as with every
packet demuxed: the same frame count, frames, indices and errors, on hostile clips too. Clips outside
the index rule are counted by the full demux."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from vidscore_core.media.container import read_header
from vidscore_core.media.frames import FrameRequest
from vidscore_core.media.mp4_index import hollow_file, index_packets
from vidscore_core.media.sparse import decode_sparse
from vidscore_core.media.synth import pan_frames, texture_image

N = 61
WANTS = {
    "aesthetic": (FrameRequest(points=(0.1, 0.5, 0.9)).want, False),
    "flow": (FrameRequest(indices=(0, 10, 20, 30)).want, False),
    "probe": (lambda n: [n - 1], True),
    "scattered": (lambda n: [7, 19, 22, 26, 34, 45, 46], False),
    "every": (lambda n: list(range(n)), False),
}


def _encode(path: Path, options: dict, *, codec: str = "libx264", faststart: bool = True, vfr: bool = False,
            audio: bool = False) -> Path:  # fmt: skip
    frames = pan_frames(texture_image(256, 384, seed=3), 160, 96, N, dx=4, dy=1)
    with av.open(str(path), "w", options={"movflags": "+faststart"} if faststart else {}) as container:
        stream = container.add_stream(codec, rate=24, options=options)
        stream.width, stream.height, stream.pix_fmt = 160, 96, "yuv420p"
        if vfr:  # irregular frame durations, 20-90 ms
            stream.codec_context.time_base = Fraction(1, 1000)
            steps = np.random.default_rng(1).integers(20, 90, N)
        if audio:
            sound = container.add_stream("aac", rate=48000)
            for start in range(0, 3 * 48000, 1024):
                chunk = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
                chunk.sample_rate, chunk.pts = 48000, start
                for packet in sound.encode(chunk):
                    container.mux(packet)
            for packet in sound.encode():
                container.mux(packet)
        for i, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            if vfr:
                frame.pts, frame.time_base = int(steps[:i].sum()), Fraction(1, 1000)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def _shifted(source: Path, path: Path, frames: int) -> Path:
    """`source` remuxed `frames` frames earlier: its first frames get negative times, which the MP4
    muxer cuts with an edit list (negative `frames`: an empty edit delays the start)."""
    with av.open(str(source)) as src, av.open(str(path), "w") as out:
        video = src.streams.video[0]
        copy = out.add_stream_from_template(video)
        shift = int(frames / video.average_rate / video.time_base)
        for packet in src.demux(video):
            if packet.dts is not None:
                packet.pts, packet.dts, packet.stream = packet.pts - shift, packet.dts - shift, copy
                out.mux(packet)
    return path


def _patched(source: Path, path: Path, edit) -> Path:
    data = bytearray(source.read_bytes())
    edit(data, data.index(b"stss"))
    path.write_bytes(bytes(data))
    return path


def _rename_stss(data: bytearray, at: int) -> None:
    data[at : at + 4] = b"free"  # no sync sample table: FFmpeg calls every sample a keyframe


def _move_second_sync_sample(data: bytearray, at: int) -> None:
    entry = at + 16  # after the type, version/flags and count: the second sample number
    data[entry : entry + 4] = (int.from_bytes(data[entry : entry + 4], "big") + 2).to_bytes(4, "big")


# name -> whether the index is trusted
TRUSTED = {
    "bframes.mp4": True, "open_gop.mp4": True, "no_bframes.mp4": True, "scenecuts.mp4": True, "vfr.mp4": True,
    "audio.mp4": True, "moov_at_end.mp4": True, "moov_at_end.mov": True, "hevc_open_gop.mp4": True,
    "mpeg4.mp4": True, "edit_list_delay.mp4": True, "stss_lies.mp4": True,
    "edit_list_trim.mp4": False, "no_stss.mp4": False, "intra_only.mp4": False, "cut_half.mp4": False,
    "cut_tail.mp4": False,
}  # fmt: skip


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("mp4_index")
    x264 = {
        "bframes.mp4": "keyint=12:min-keyint=12:bframes=3:b-pyramid=normal",
        "open_gop.mp4": "keyint=10:min-keyint=10:bframes=2:open-gop=1",
        "no_bframes.mp4": "keyint=9:bframes=0",
        "scenecuts.mp4": "keyint=30:min-keyint=3:scenecut=100:bframes=3",
        "intra_only.mp4": "keyint=1",
    }
    made = {name: _encode(folder / name, {"x264-params": p}) for name, p in x264.items()}
    gop12 = {"x264-params": "keyint=12:bframes=2"}
    made["vfr.mp4"] = _encode(folder / "vfr.mp4", gop12, vfr=True)
    made["audio.mp4"] = _encode(folder / "audio.mp4", gop12, audio=True)
    made["moov_at_end.mp4"] = _encode(folder / "moov_at_end.mp4", gop12, faststart=False)
    made["moov_at_end.mov"] = _encode(folder / "moov_at_end.mov", gop12, faststart=False)
    if "libx265" in av.codecs_available:
        made["hevc_open_gop.mp4"] = _encode(folder / "hevc_open_gop.mp4", {"x265-params": "keyint=15:bframes=4:log-level=error"},
                                            codec="libx265")  # fmt: skip
    made["mpeg4.mp4"] = _encode(folder / "mpeg4.mp4", {"g": "12", "bf": "2"}, codec="mpeg4")
    bframes = made["bframes.mp4"]
    made["edit_list_trim.mp4"] = _shifted(bframes, folder / "edit_list_trim.mp4", 5)
    made["edit_list_delay.mp4"] = _shifted(bframes, folder / "edit_list_delay.mp4", -24)
    made["no_stss.mp4"] = _patched(bframes, folder / "no_stss.mp4", _rename_stss)
    made["stss_lies.mp4"] = _patched(bframes, folder / "stss_lies.mp4", _move_second_sync_sample)
    data = bframes.read_bytes()
    (folder / "cut_half.mp4").write_bytes(data[: len(data) // 2])
    (folder / "cut_tail.mp4").write_bytes(data[:-3])
    made["cut_half.mp4"], made["cut_tail.mp4"] = folder / "cut_half.mp4", folder / "cut_tail.mp4"
    return made


def _trusted(path: Path) -> bool:
    hollow = hollow_file(str(path))
    with av.open(hollow) as container:
        return index_packets(container, container.streams.video[0], hollow) is not None


def _outcome(path: Path, want, verify_last: bool, from_index: bool):
    try:
        got = decode_sparse(str(path), read_header(str(path)), want, verify_last, from_index=from_index)
    except Exception as exc:
        return type(exc).__name__, getattr(exc, "reason", str(exc))
    return got.num_frames, got.indices, got.frames


@pytest.mark.parametrize("name", sorted(TRUSTED))
def test_the_index_path_decodes_as_the_full_demux(clips: dict[str, Path], name: str) -> None:
    if name not in clips:
        pytest.skip("this PyAV build has no libx265 encoder")
    assert _trusted(clips[name]) == TRUSTED[name]
    for label, (want, verify_last) in WANTS.items():
        indexed, demuxed = (_outcome(clips[name], want, verify_last, from_index) for from_index in (True, False))
        assert indexed[:2] == demuxed[:2], label
        if len(indexed) == 3:
            assert all(np.array_equal(a, b) for a, b in zip(indexed[2], demuxed[2], strict=True)), label
    if name.startswith("cut_half"):
        assert indexed[1].startswith("truncated: container declares 61 frames")
