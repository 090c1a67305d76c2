"""Human annotation and evaluation (docs/method.md §6; supplemental sections 1 and 3): a web app in
which annotators label generated ads with RFNet's classes and rank images from several methods,
on an SQLite file or a PostgreSQL server, with exports that RFNet trains from.

`reliable-ad annotate serve|import|export|users` is the command line; :func:`create_app` the app.
"""

from reliable_ad.annotation.config import AnnotationConfig
from reliable_ad.annotation.db import Database

__all__ = ["AnnotationConfig", "Database", "create_app"]


def create_app(*args, **kwargs):
    """The FastAPI app (imported on use: FastAPI is needed only to serve)."""
    from reliable_ad.annotation.app import create_app as _create_app

    return _create_app(*args, **kwargs)
