"""SQLite database URLs for a file, and the file a URL names, as SQLAlchemy reads them: MLflow's
store and Optuna's storage both open their URL through SQLAlchemy. No MLflow here, so tuning's Optuna
side uses it without loading MLflow.

SQLAlchemy takes a URL's path up to its first `?` and percent-decodes it (`_parse_url` in
sqlalchemy/engine/url.py): written as it is, a repository folder named `r%41` reads as `rA` (a
folder that is not there), and one named `rt_q?x=1` as the file `rt_q` beside the repository. So `%`
and `?` (and control characters, which end the query's match) are percent-encoded. MLflow, though,
creates the parent folder of the undecoded text of a URL that starts `sqlite:///`
(`_make_parent_dirs_if_sqlite` in mlflow/store/db/utils.py), which for an encoded path is a new
folder `r%2541` beside the repository; the same dialect named with its driver, `sqlite+pysqlite:///`,
is read alike by SQLAlchemy and skipped there. It is used only for a path that needs encoding, so
an ordinary path keeps the URL people know (spaces, `#` and non-ASCII letters need none)."""

import urllib.parse
from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError


def sqlite_url(path: Path, **query: object) -> str:
    """The URL of the SQLite file at `path` (made absolute), with `query` (timeout=60) after it."""
    text = str(Path(path).absolute())
    encoded = "".join(urllib.parse.quote(c) if c in "%?" or ord(c) < 32 else c for c in text)
    scheme = "sqlite" if encoded == text else "sqlite+pysqlite"
    return f"{scheme}:///{encoded}" + (f"?{urllib.parse.urlencode(query)}" if query else "")


def sqlite_file(url: str) -> Path | None:
    """The file a SQLite URL opens, made absolute as SQLAlchemy's driver does; None for any other
    URL, an in-memory database, or a `uri=true` URL (whose path SQLite reads again)."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):  # not a database URL, or a port that is not a number
        return None
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:") or "uri" in parsed.query:
        return None
    return Path(parsed.database).absolute()
