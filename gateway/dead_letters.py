"""Dead letters once written: an admin's /retry puts the work back, a scripted run names them.

The store writes a dead letter (gateway/store/dead_letters.py) when a run's retries are used
up or a reply cannot be delivered; this module is what the gateway does with one afterwards.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

if TYPE_CHECKING:
    from gateway.running import RunningGateway
    from gateway.store import Store


async def retry(gw: RunningGateway, letter_id: int) -> bool:
    """An admin's /retry: put a dead letter's work back in the queue (False: no such letter)."""
    letter = await gw.store.dead_letter(letter_id)
    if letter is None:
        return False
    kind, ref, payload = letter
    # The payload is the JSON the store wrote for this kind of letter (dead_letter_pending,
    # dead_letter_reply): a list of message ids for a run, the outbox row id for a reply.
    if kind == "run":
        ids = [int(i) for i in cast("list[int | str]", payload.get("message_ids", []))]
        await gw.store.revive_messages(ids)
        await gw.store.drop_dead_letter(letter_id)
        if gw.registry.by_folder(ref) is not None:
            gw.queue.wake(ref)
    elif kind == "reply":
        entry_id = int(cast("int | str", payload["outbox_id"]))
        await gw.store.revive_reply(entry_id)
        await gw.store.drop_dead_letter(letter_id)
        await gw.outbox.flush([entry_id])
    else:
        return False
    return True


async def newer_than(store: Store, since_letter: int) -> list[str]:
    """Dead letters newer than `since_letter`, one line each, for a scripted run's exit."""
    return [
        f"dead letter #{letter_id} ({kind} {ref}): {reason}"
        for letter_id, kind, ref, reason in await store.dead_letters()
        if letter_id > since_letter
    ]


async def last_id(store: Store) -> int:
    """The newest dead letter's id (0: none), to tell a run's new ones from older ones."""
    letters = await store.dead_letters()
    return letters[-1][0] if letters else 0
