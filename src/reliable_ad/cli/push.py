"""`reliable-ad push FOLDER --repo-id USER/NAME`: upload a model reliable-ad wrote (a saved RFNet, an
RFFT export) to the Hugging Face Hub, with its model card, through huggingface_hub's HfApi."""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

from reliable_ad.training.model_card import CARD_NAME, LIBRARY

_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}$")
CONFIGS = ("config.json", "adapter_config.json")  # a model's, a PEFT adapter's


def add_parser(sub) -> None:
    p = sub.add_parser(
        "push", help="upload a saved RFNet or an RFFT export to the Hugging Face Hub",
        description="Upload FOLDER, a model reliable-ad wrote (`rfnet train`'s OUT/model, a saved RFNet, or an "
                    "RFFT run's export/controlnet, export/lora/...), to the Hub repository --repo-id, created if "
                    "missing. The folder must hold the model card README.md reliable-ad wrote, the weights "
                    "(*.safetensors) and the config. Log in first with `hf auth login` (or set HF_TOKEN). "
                    "Offline (HF_HUB_OFFLINE=1 or no network) nothing is uploaded and the command says so.",
    )
    p.add_argument("folder", metavar="FOLDER", help="the model folder to upload")
    p.add_argument("--repo-id", required=True, metavar="USER/NAME", help="the Hub model repository, e.g. me/rfnet-ads")
    p.add_argument("--private", action="store_true", help="create the repository private (an existing one keeps "
                                                          "its visibility)")
    p.add_argument("--token", help="a Hub token with write access (default: HF_TOKEN or the `hf auth login` one; "
                                   "a token on the command line ends up in your shell history)")
    p.add_argument("--commit-message", default=None, help="default: 'Upload <folder name> with reliable-ad'")
    p.set_defaults(func=run_push)


def check_folder(folder: str | os.PathLike) -> dict:
    """The card data of a model folder reliable-ad wrote; ``ValueError`` naming what is missing and the fix."""
    from huggingface_hub import ModelCard

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"FOLDER {str(folder)!r} is not a folder; pass a saved model's folder "
                                "(e.g. rfnet train's OUT/model or an RFFT run's OUT/export/controlnet)")
    card_path = folder / CARD_NAME
    if not card_path.is_file():
        raise ValueError(f"{str(folder)!r} has no model card {CARD_NAME}, so it was not written by this reliable-ad; "
                         "re-save it (rfnet: reliable_ad.rfnet.save_pretrained, or `rfnet train`; RFFT: "
                         "`rfft train` exports) and push that folder")
    try:
        data = ModelCard.load(card_path).data.to_dict()
    except Exception as e:  # noqa: BLE001 - huggingface_hub raises several kinds for a bad card
        raise ValueError(f"{str(card_path)!r} is not a valid model card ({e}); re-save the model to rewrite it") from e
    if LIBRARY not in (data.get("tags") or []):
        raise ValueError(f"{str(card_path)!r} is not a card reliable-ad wrote (no {LIBRARY!r} tag); push other "
                         "models with `hf upload`, or re-save this one with reliable-ad")
    if not any(folder.glob("*.safetensors")):
        raise ValueError(f"{str(folder)!r} has no weights (*.safetensors); the save is incomplete: re-save the model")
    if "lora" not in (data.get("tags") or []) and not any((folder / c).is_file() for c in CONFIGS):
        raise ValueError(f"{str(folder)!r} has no {' or '.join(CONFIGS)}; the save is incomplete: re-save the model")
    return data


def _offline_message(folder: str, repo_id: str, why: str) -> str:
    return (f"reliable-ad push: offline ({why}); nothing was uploaded. {folder} is ready to push: when online, "
            f"run `reliable-ad push {folder} --repo-id {repo_id}` again (with HF_HUB_OFFLINE unset), "
            f"or `hf upload {repo_id} {folder}`")


def _is_offline() -> bool:
    from huggingface_hub import constants

    flag = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
    return flag or bool(constants.HF_HUB_OFFLINE)


def _network_errors() -> tuple[type[BaseException], ...]:
    from huggingface_hub.errors import OfflineModeIsEnabled

    errors: list[type[BaseException]] = [OfflineModeIsEnabled, ConnectionError, TimeoutError]
    # huggingface_hub's HTTP client: httpx2 (2.x), httpx (1.x) or requests (0.x)
    for module, name in (("httpx2", "TransportError"), ("httpx", "TransportError"), ("requests", "ConnectionError"),
                         ("requests", "Timeout")):
        try:
            errors.append(getattr(__import__(module), name))
        except (ImportError, AttributeError):
            pass
    return tuple(errors)


def run_push(args: argparse.Namespace) -> int:
    if not _REPO_ID.match(args.repo_id or ""):
        raise ValueError(f"--repo-id {args.repo_id!r}: expected USER/NAME (your Hub user or organisation, a slash, "
                         "the model name), e.g. --repo-id me/rfnet-ads")
    data = check_folder(args.folder)
    if _is_offline():
        print(_offline_message(args.folder, args.repo_id, "HF_HUB_OFFLINE is set"), file=sys.stderr)
        return 1
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    api = HfApi(token=args.token)
    try:
        url = api.create_repo(args.repo_id, private=args.private, exist_ok=True, repo_type="model")
        api.upload_folder(repo_id=args.repo_id, folder_path=args.folder, repo_type="model",
                          commit_message=args.commit_message or f"Upload {Path(args.folder).name} with reliable-ad")
    except _network_errors() as e:
        print(_offline_message(args.folder, args.repo_id, f"no network: {type(e).__name__}"), file=sys.stderr)
        return 1
    except HfHubHTTPError as e:
        status = getattr(getattr(e, "response", None), "status_code", None)
        fix = ("log in with `hf auth login`, set HF_TOKEN, or pass --token with write access"
               if status in (401, 403) else "check --repo-id and your access to it")
        print(f"reliable-ad push: the Hub refused the upload ({status}: {str(e).splitlines()[0]}); {fix}",
              file=sys.stderr)
        return 1
    print(f"pushed {args.folder} ({data.get('library_name')}, {data.get('pipeline_tag')}) to {url}")
    return 0
