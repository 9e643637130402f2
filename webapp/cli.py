"""Command-line commands of the site (``flask --app webapp create-user ...``): they use the tables, never the
other way round."""

from __future__ import annotations

import click
from flask.cli import with_appcontext

from webapp import tokens, users
from webapp.security import hash_password, password_problem


@click.command("create-user")
@click.option("--email", required=True, help="the account's address")
@click.option("--password", prompt=True, hide_input=True, help="at least 12 characters, not easy to guess")
@click.option("--verified", is_flag=True, help="mark the address as confirmed (no mail is sent)")
@click.option("--api-token", is_flag=True, help="also create an API token and print it (shown only now)")
@with_appcontext
def create_user_command(email: str, password: str, verified: bool, api_token: bool) -> None:
    """Create an account from the command line (administrators, load tests)."""
    problem = password_problem(password, email=email)
    if problem:
        raise click.UsageError(problem)
    user = users.create(email, hash_password(password))
    if user is None:
        raise click.UsageError(f"{email} is already registered")
    if verified:
        users.update(user.id, verified=1)
    click.echo(f"created account {user.id} for {user.email}")
    if api_token:
        click.echo(tokens.create(user.id))
