"""Passwords in storage and tracking URLs never reach a log line, an error, MLflow or a profile."""

import pytest

from tuner.base.urls import redact_url, sqlite_file


@pytest.mark.parametrize(
    "url, shown",
    [
        ("postgresql+psycopg://bob:s3cret@db:5432/optuna", "postgresql+psycopg://bob:***@db:5432/optuna"),
        ("postgresql://bob:a/b@db/optuna", "postgresql://bob:***@db/optuna"),  # a '/' in the password
        ("https://:tok3n@mlflow.example.com", "https://:***@mlflow.example.com"),  # no user name
        ("sqlite:///dtune.db", "sqlite:///dtune.db"),
        ("http://127.0.0.1:5000", "http://127.0.0.1:5000"),
    ],
)
def test_redact_url_hides_the_password_and_nothing_else(url, shown):
    assert redact_url(url) == shown


def test_sqlite_file_is_the_one_parser_of_sqlite_urls(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert sqlite_file("sqlite:///rel/x.db") == tmp_path / "rel" / "x.db"  # absolute: a later chdir can't move it
    assert sqlite_file(f"sqlite:///{tmp_path}/y.db") == tmp_path / "y.db"
    assert sqlite_file("sqlite://") is None and sqlite_file("sqlite:///:memory:") is None
    assert sqlite_file("postgresql+psycopg://u:p@h/db") is None and sqlite_file("not a url") is None
