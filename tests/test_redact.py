"""Passwords in storage and tracking URLs never reach a log line, an error, MLflow or a profile."""

import pytest

from tuner.redact import redact_url


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
