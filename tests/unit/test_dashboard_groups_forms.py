"""The Groups page's forms become the chat commands' argument lists, one field one argument.

A field is never split or re-parsed (a value with spaces or quotes stays one argument, as if
quoted in the chat), an empty optional field adds no flag, and only the listed actions map to a
command — anything else, or an unticked confirmation, is a message and no command.
"""

from __future__ import annotations

from dashboard.backend import GroupCommand
from dashboard.groups_page import change_command, register_command


def test_register_fields_become_the_register_arguments() -> None:
    form = {
        "chat_id": " tg:-100 ",
        "name": "team",
        "trigger": "@Bob",
        "no_trigger": "on",
        "runtime": "claude",
        "senders": "members",
        "members": "tg:1,tg:2",
        "csrf": "ignored",
    }
    assert register_command(form) == GroupCommand(
        "register",
        (
            "tg:-100",
            "team",
            "--trigger",
            "@Bob",
            "--no-trigger",
            "--runtime",
            "claude",
            "--senders",
            "members",
            "--members",
            "tg:1,tg:2",
        ),
    )
    assert register_command({"chat_id": "tg:-1", "name": "a b", "trigger": ""}) == GroupCommand(
        "register", ("tg:-1", "a b")
    )
    assert register_command({}) == GroupCommand("register", ("", ""))  # the command says what is missing


def test_each_action_is_one_command_and_unregister_needs_its_box() -> None:
    assert change_command("team", {"action": "senders", "policy": "approval"}) == GroupCommand(
        "senders", ("team", "approval")
    )
    assert change_command("team", {"action": "allow", "sender": "tg:5"}) == GroupCommand(
        "allow", ("team", "tg:5")
    )
    assert change_command("team", {"action": "block", "sender": "x y"}) == GroupCommand(
        "block", ("team", "x y")
    )
    assert change_command("team", {"action": "runtime", "runtime": "default"}) == GroupCommand(
        "set", ("team", "--runtime", "default")
    )
    assert change_command("team", {"action": "budget", "limit": "daily", "amount": "off"}) == GroupCommand(
        "budget", ("set", "team", "daily", "off")
    )
    assert change_command("team", {"action": "unregister", "confirm": "yes"}) == GroupCommand(
        "unregister", ("team",)
    )
    for form in ({"action": "unregister"}, {"action": "unregister", "confirm": "on"}):
        said = change_command("team", form)
        assert isinstance(said, str) and "not unregistered" in said
    for form in ({"action": "status"}, {"action": "register"}, {}):
        said = change_command("team", form)
        assert isinstance(said, str) and said.startswith("unknown action")
