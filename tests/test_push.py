"""`reliable-ad push`: only a model folder reliable-ad wrote goes up, and offline it says so (and how to
push later) instead of failing with a traceback. No test here reaches the real Hub."""

from __future__ import annotations

import pytest

from reliable_ad.cli.main import main
from reliable_ad.rfnet import load_rfnet, save_pretrained


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    model, processor = load_rfnet("tiny")
    return save_pretrained(model, tmp_path_factory.mktemp("push") / "rfnet", processor)


def test_offline_push_says_so_and_how_to_push_later(saved, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["push", str(saved), "--repo-id", "me/rfnet-ads"]) == 1
    err = capsys.readouterr().err
    assert "offline" in err and "HF_HUB_OFFLINE" in err and "nothing was uploaded" in err
    assert f"reliable-ad push {saved} --repo-id me/rfnet-ads" in err and "Traceback" not in err


def test_push_without_a_network_is_an_offline_message(saved, monkeypatch, capsys):
    from huggingface_hub import constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens: connection refused
    assert main(["push", str(saved), "--repo-id", "me/rfnet-ads", "--token", "hf_x"]) == 1
    err = capsys.readouterr().err
    assert "offline (no network" in err and "nothing was uploaded" in err and "Traceback" not in err


def test_a_folder_reliable_ad_did_not_write_is_refused_with_the_fix(saved, tmp_path, capsys):
    import shutil

    assert main(["push", str(saved), "--repo-id", "not a repo"]) == 2
    assert "expected USER/NAME" in capsys.readouterr().err
    no_card = shutil.copytree(saved, tmp_path / "no_card")
    (no_card / "README.md").unlink()
    assert main(["push", str(no_card), "--repo-id", "me/x"]) == 2
    err = capsys.readouterr().err
    assert "no model card README.md" in err and "re-save" in err
    no_weights = shutil.copytree(saved, tmp_path / "no_weights")
    (no_weights / "model.safetensors").unlink()
    assert main(["push", str(no_weights), "--repo-id", "me/x"]) == 2
    assert "no weights (*.safetensors)" in capsys.readouterr().err
    foreign = shutil.copytree(saved, tmp_path / "foreign")
    (foreign / "README.md").write_text("---\nlicense: mit\nlibrary_name: timm\n---\n# someone else's\n")
    assert main(["push", str(foreign), "--repo-id", "me/x"]) == 2
    assert "not a card reliable-ad wrote" in capsys.readouterr().err
