"""Moved to `reliable_ad.synthad.decisive` (the CLI's labelled sets abstain too); re-exported here
while the studies move their imports."""

from reliable_ad.synthad.decisive import *  # noqa: F401,F403
from reliable_ad.synthad.decisive import CHECK_SALT, sub_seed  # noqa: F401
