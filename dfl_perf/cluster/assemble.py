"""The driver's one job per output: join the encoded segments of a video, in order, into one file,
and carry the source's audio over.

Segments are joined by copying their compressed packets with shifted timestamps (PyAV, FFmpeg's
libraries): no frame is decoded or encoded here. The output is written to ``<name>.partial<ext>``
and renamed when complete, so a cancelled or failed job leaves no half-written file under the
output's name (``abort`` removes the partial one).
"""

from __future__ import annotations

import io
import logging
import os
from fractions import Fraction
from pathlib import Path
from typing import Any, Iterator, Optional

__all__ = ["SegmentJoiner", "partial_path"]

log = logging.getLogger("dfl_perf.cluster")


def partial_path(output: str) -> str:
    path = Path(output)
    return str(path.with_name(path.stem + ".partial" + path.suffix))


class SegmentJoiner:
    """``add(segment_bytes, frames)`` in order, then ``close()`` (or ``abort()``).

    ``source``: the video whose first audio stream is copied into the output (``audio=False``: none).
    When the output's container cannot hold that audio codec, the output has no audio and
    ``audio_note`` says why.
    """

    def __init__(self, output: str, fps: float, source: Optional[str] = None, audio: bool = True) -> None:
        import av

        self.output, self.fps = output, fps
        self.partial = partial_path(output)
        self._av = av
        self._out = av.open(self.partial, "w")
        self._video: Any = None
        self._offset = 0  # next segment's first pts, in the output video stream's time base
        self._end_time = Fraction(0)  # seconds of video written so far
        self.frames = 0
        self.audio_note = ""
        self._audio_in: Any = None
        self._audio_out: Any = None
        self._audio_packets: Optional[Iterator[Any]] = None
        self._pending_audio: Any = None
        self.closed = False
        if audio and source is not None:
            self._open_audio(source)

    # -- audio -------------------------------------------------------------------------------

    def _open_audio(self, source: str) -> None:
        try:
            container = self._av.open(source)
        except Exception as exc:  # the video part was readable by OpenCV; say why audio is not
            self.audio_note = "audio not carried over: %s" % exc
            return
        if not container.streams.audio:
            container.close()
            self.audio_note = "the source has no audio"
            return
        stream = container.streams.audio[0]
        try:
            self._audio_out = self._out.add_stream_from_template(stream)
        except Exception as exc:
            container.close()
            self.audio_note = "audio not carried over: %s cannot hold %s audio (%s)" % (
                Path(self.output).suffix, stream.codec_context.name, exc)
            return
        self._audio_in = container
        self._audio_packets = (p for p in container.demux(stream) if p.dts is not None)
        self.audio_note = "audio carried over (%s)" % stream.codec_context.name

    def _write_audio_until(self, seconds: Optional[Fraction]) -> None:
        """Copy the source's audio packets that start before ``seconds`` (None: all that is left)."""
        if self._audio_packets is None:
            return
        while True:
            packet = self._pending_audio
            if packet is None:
                packet = next(self._audio_packets, None)
                if packet is None:
                    self._audio_packets = None
                    return
            if seconds is not None and packet.pts is not None and packet.pts * packet.time_base >= seconds:
                self._pending_audio = packet
                return
            self._pending_audio = None
            packet.stream = self._audio_out
            self._out.mux(packet)

    # -- video -------------------------------------------------------------------------------

    def add(self, data: bytes, frames: int) -> None:
        """Append one encoded segment of ``frames`` frames (the next in order)."""
        segment = self._av.open(io.BytesIO(data))
        try:
            stream = segment.streams.video[0]
            if self._video is None:
                self._video = self._out.add_stream_from_template(stream)
                self._video.time_base = stream.time_base
            last = self._offset
            for packet in segment.demux(stream):
                if packet.dts is None:  # the demuxer's end-of-stream marker
                    continue
                packet.pts = (packet.pts if packet.pts is not None else packet.dts) + self._offset
                packet.dts += self._offset
                last = max(last, packet.pts + max(packet.duration or 0, 1))
                packet.stream = self._video
                self._out.mux(packet)
            tick = self._ticks_per_frame(stream.time_base)
            self._offset = max(last, self._offset + frames * tick)
            self.frames += frames
            self._end_time = self._offset * Fraction(stream.time_base)
        finally:
            segment.close()
        self._write_audio_until(self._end_time)

    def _ticks_per_frame(self, time_base: Any) -> int:
        return max(1, int(round(1 / (Fraction(time_base) * Fraction(self.fps).limit_denominator(1001)))))

    def close(self) -> str:
        """Finish the file (audio up to the video's end) and give it the output's name; returns it."""
        self._write_audio_until(self._end_time)
        self._finish()
        os.replace(self.partial, self.output)
        return self.output

    def abort(self) -> None:
        """Stop and remove the partial output."""
        try:
            self._finish()
        except Exception as exc:  # a file that we delete anyway
            log.debug("closing a partial output failed: %s", exc)
        if os.path.exists(self.partial):
            os.remove(self.partial)

    def _finish(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            self._out.close()
        finally:
            if self._audio_in is not None:
                self._audio_in.close()

