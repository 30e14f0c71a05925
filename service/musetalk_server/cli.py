"""`musetalk-server`: serve, preprocess and render from the command line, through the same render entry.

`preprocess` is also the entry point of the Kubernetes preprocessing Job.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .avatars.service import CreateRequest
from .config import Settings
from .errors import MuseTalkError, TooLarge, UnsupportedMedia, error_body
from .runtime import Runtime

__all__ = ["main"]

log = logging.getLogger("musetalk_server")
EXIT_USER_ERROR = 2  # bad input; 1 is anything unexpected
_DOWNLOAD_CHUNK = 1 << 20


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return args.run(args)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="musetalk-server", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the HTTP service (settings from MUSETALK_* / .env)")
    serve.add_argument("--host", help="overrides MUSETALK_HOST")
    serve.add_argument("--port", type=int, help="overrides MUSETALK_PORT")
    serve.set_defaults(run=_serve)

    pre = sub.add_parser("preprocess", help="build an avatar from a video, image, or http(s) URL")
    pre.add_argument("--avatar-id", required=True)
    pre.add_argument("--video", required=True, help="a path, or an http(s) URL to download")
    pre.add_argument("--bbox-shift", type=int, default=0)
    pre.add_argument("--engine", choices=("auto", "lite", "musetalk"), help="overrides MUSETALK_ENGINE")
    pre.add_argument("--fps", type=float, help="overrides MUSETALK_FPS")
    pre.add_argument("--result-dir", type=Path, help="overrides MUSETALK_RESULT_DIR")
    pre.add_argument("--overwrite", action="store_true")
    pre.add_argument("--result-json", type=Path, help="also write the JSON outcome here (e.g. /dev/termination-log)")
    pre.set_defaults(run=_preprocess)

    render = sub.add_parser("render", help="drive an avatar with audio into an MP4")
    render.add_argument("--avatar-id", required=True)
    render.add_argument("--audio", type=Path, required=True)
    render.add_argument("--out", type=Path, required=True)
    render.add_argument("--engine", choices=("auto", "lite", "musetalk"))
    render.add_argument("--result-dir", type=Path)
    render.set_defaults(run=_render)

    _add_weights_commands(sub)
    return parser


def _settings(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {}
    for field in ("engine", "fps", "result_dir", "host", "port"):
        value = getattr(args, field, None)
        if value is not None:
            overrides[field] = value
    return Settings(**overrides)


def _serve(args: argparse.Namespace) -> int:
    from .serve import serve

    serve(_settings(args))
    return 0


def _runtime(settings: Settings) -> Runtime:
    runtime = Runtime.build(settings)
    runtime.load_engine()
    return runtime


def _preprocess(args: argparse.Namespace) -> int:
    settings = _settings(args)
    try:
        request = CreateRequest(args.avatar_id, args.bbox_shift, args.overwrite,
                                Path(urllib.parse.urlparse(args.video).path).name or None)
        with tempfile.TemporaryDirectory(prefix="musetalk-src-") as tmp:
            source = _fetch(args.video, Path(tmp), settings.max_upload_bytes)
            result = _runtime(settings).avatars.create(request, source)
    except MuseTalkError as e:
        _emit(e.body(), args.result_json, stream=sys.stderr)
        return EXIT_USER_ERROR if e.status < 500 else 1
    except Exception as e:
        log.exception("preprocessing failed")
        _emit(error_body(f"preprocessing failed: {e}", "internal_error"), args.result_json, stream=sys.stderr)
        return 1
    _emit(result.to_dict(), args.result_json, stream=sys.stdout)
    return 0


def _render(args: argparse.Namespace) -> int:
    from .media.mp4 import AUDIO_RATE
    from .render.sinks.mp4 import write_mp4

    settings = _settings(args)
    try:
        with _runtime(settings).rendering.open(args.avatar_id, "unpaced", args.audio, mux_rate=AUDIO_RATE) as render:
            frames = write_mp4(render, args.out, audio_rate=AUDIO_RATE)
    except MuseTalkError as e:
        _emit(e.body(), None, stream=sys.stderr)
        return EXIT_USER_ERROR if e.status < 500 else 1
    _emit({"output": str(args.out), "frames": frames, "fps": render.speech.fps}, None, stream=sys.stdout)
    return 0


def _add_weights_commands(sub: argparse._SubParsersAction) -> None:
    weights = sub.add_parser("weights", help="download or check the MuseTalk v1.5 weights")
    wsub = weights.add_subparsers(dest="weights_command", required=True)
    for name, helptext in (("download", "fetch the upstream files from their public hubs"),
                           ("check", "verify a weights directory")):
        cmd = wsub.add_parser(name, help=helptext)
        cmd.add_argument("--model-dir", type=Path, help="overrides MUSETALK_MODEL_DIR")
        cmd.set_defaults(run=_weights)


def _weights(args: argparse.Namespace) -> int:
    from .engines.musetalk import download

    model_dir = args.model_dir or Settings().model_dir
    try:
        if args.weights_command == "download":
            download.download_weights(model_dir)
        report = download.check_weights(model_dir)
    except MuseTalkError as e:
        _emit({"ok": False, **e.body()}, None, stream=sys.stderr)
        return 1
    _emit(report, None, stream=sys.stdout)
    return 0 if report.get("ok") else 1


def _fetch(source: str, folder: Path, limit: int) -> Path:
    """A local path as is; an http(s) URL downloaded into `folder`, size-checked."""
    scheme = urllib.parse.urlparse(source).scheme
    if scheme not in ("http", "https"):
        path = Path(source)
        if not path.is_file():
            raise UnsupportedMedia(f"video {source!r} is not a file")
        return path
    target = folder / (Path(urllib.parse.urlparse(source).path).name or "video")
    try:
        with urllib.request.urlopen(source, timeout=60) as response, target.open("wb") as out:
            size = 0
            while chunk := response.read(_DOWNLOAD_CHUNK):
                size += len(chunk)
                if size > limit:
                    raise TooLarge(f"{source} is over the {limit}-byte limit")
                out.write(chunk)
    except OSError as e:
        raise UnsupportedMedia(f"could not download {source}: {e}") from e
    return target


def _emit(payload: dict[str, Any], path: Path | None, *, stream) -> None:
    text = json.dumps(payload)
    stream.write(text + "\n")
    if path is not None:
        path.write_text(text)


if __name__ == "__main__":
    sys.exit(main())
